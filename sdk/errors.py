"""The one exception type that the CLI turns into a single clear line and a non-zero exit."""


class UserError(Exception):
    """Bad input from the user: the message says what is wrong, where, and how to fix it."""


def require_at_least_one(config, names: tuple[str, ...]) -> None:
    """A UserError naming the first of ``config``'s integer fields ``names`` that is below 1."""
    for name in names:
        if getattr(config, name) < 1:
            raise UserError(f"{name} must be at least 1, got {getattr(config, name)}")


def bundle_at(path):
    """The verified bundle at a user's ``path``, or a UserError naming the path and the reason."""
    from metaedge.deploy.bundle import BundleError, read_bundle

    try:
        return read_bundle(path)
    except BundleError as e:
        raise UserError(f"{path}: {e}") from None
