"""The meta-learning core's hyperparameter defaults, the one home of each (torch-free, so that help texts can
quote them without loading the core). ``InnerLoop`` and the training configurations take their defaults from here;
a task family's recipes override them per algorithm."""

# the inner loop (InnerLoop's fields)
INNER = {
    "lr": 0.1,  # step size α
    "steps": 1,  # adaptation steps
    "solver_steps": 5,  # iMAML, ALSET: iterations of the inverse-Hessian solver
    "solver": "cg",  # iMAML, ALSET: conjugate gradients ("neumann": a truncated Neumann series)
    "samples": 4,  # vbmaml: reparameterised weight draws per step
    "kl_weight": 1.0,  # vbmaml: weight of the KL term (1: the variational free energy of eq. 2.32)
    "sharp_in": 0.05,  # sharpmaml: radius α_in of the inner perturbation (eq. 2.14)
    "sharp_out": 0.05,  # sharpmaml: radius α_ot of the outer perturbation
    "es_directions": 16,  # esmaml: random directions n of the estimators (eq. 2.20-2.21)
    "es_delta": 0.02,  # esmaml: smoothing δ
    "es_hessian": False,  # esmaml: the (I − αH_es) correction of eq. 2.18 (else eq. 2.19)
    "proposals": 40,  # modular: simulated-annealing proposals per task
}
DEFAULT_PROX = 1.0  # λ of the proximal inner problem (iMAML, Prox-MAML, ALSET) unless a run says otherwise
DEFAULT_ASSIGNMENT = "anneal"  # modular: how meta-training picks one module per layer (eq. 2.38b)

# names of the extra parameters some algorithms meta-learn beside θ
STEP_PREFIX = "lr."  # Meta-SGD: params["lr.<name>"] is the learned step size of every entry of <name>
LOGSTD_PREFIX = "logstd."  # gaussian: params["logstd.<name>"] is the log standard deviation of every entry of <name>
