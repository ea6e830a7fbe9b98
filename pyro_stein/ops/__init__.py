"""Layer 1, pure tensor math: no Pyro is imported here (the test suite checks it).

* `kernels`: radial kernels (RBF, IMQ) and the median heuristic;
* `stein`: the Stein variational direction and the kernelized Stein discrepancy;
* `langevin`: the discretized Langevin flow (ULA, MALA);
* `matching`: distribution-matching directions (sliced Wasserstein, energy distance);
* `laplace`: mode search and the Laplace approximation of a batched log density;
* `convergence`: when to stop training: a learning-rate ladder tested on common random numbers;
* `surrogate`: the surrogate that moves a sampler's draws along per-draw directions;
* `nn`: the package's one multilayer-perceptron builder;
* `caller`: warnings attributed to the user's line;
* `digest`: content digests of values (what a checkpoint records of its run's data).
"""
