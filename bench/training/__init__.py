"""Training: the one trainer every design shares (``trainer``), the training objectives as a plugin
registry (``objectives/``), the noise levels training draws, the EMA, checkpoints, stop requests, the
trainer's log, and a teacher's (noise, image) pairs (``pairs``). A new training loss goes in
``objectives/``."""
