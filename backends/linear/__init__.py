"""Closed-form linear predictors (target ``linear``): numpy only, exact, for tasks whose adaptation is a
linear solve (channel prediction, monograph §5.4)."""
