"""Names that params.yaml may use, kept free of heavy imports so validation stays fast."""

TORCHVISION_DATASETS = ("mnist", "fashion_mnist", "cifar10")
DATASETS = ("shapes", *TORCHVISION_DATASETS, "imagefolder")
SCHEDULES = ("linear", "scaled_linear", "cosine", "sigmoid")
PREDICTIONS = ("epsilon", "sample", "v_prediction")
SAMPLERS = ("ddpm", "ddim", "dpm_solver_pp", "dpm_solver_pp_sde", "heun")
SPACINGS = ("leading", "trailing", "linspace")
TIMESTEP_SAMPLING = ("uniform", "importance")  # how training draws t (diffusion.loss)
