"""UAE (Yan et al., ASP-DAC 2021) on the shared experiment layer.

- `config`: every UAE config section (training sections subclass `cimnas.config.OptimConfig`, data sections are
  `cimnas.config.DataConfig`, the noise is the hardware model's Gaussian defect);
- `analysis`: the output-change maths (Eq. 3-6); `analysis_run` / `table1`: the `uae analyze` / `uae table1`
  run folders;
- `noise`: noise-aware training (a `batch_context` for `cimnas.train.fit`) and the K-sample evaluation (through
  `cimnas.hardware.montecarlo.evaluate_trials`);
- `child`: build / train / evaluate one child; `search`: the controller loop; `final`: retrain + Monte-Carlo.
"""
