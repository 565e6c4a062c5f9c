"""The diffusion process and its solvers: the DDPM math (``diffusion``), the one wrapper that resolves a
network's prediction to (x0_hat, eps_hat) (``denoiser``), where samplers step (``grids``), the samplers and
their registry (``sampling``, ``sampler_registry``), and the exact denoisers of Gaussian data that test them
(``oracles``). Nothing here knows about runs, files or training: a new sampler or prediction target goes
here."""
