"""``bench study``: measured answers to one question each, every one a short module on the shared runner
(:mod:`bench.studies.runner`: the designs, what each is scored with, the report).

  direct     the seed's question, "why not predict the image directly from pure noise?" (``bench study
             direct``): DDPM, x0 prediction, one call on random pairs and on a teacher's coupled pairs;
  design     EDM's design axes (``bench study design``: target x loss weighting, with each solver and grid)
             and the noise path (``bench study flow``: DDPM against flow matching's velocity, rectified
             flow and SD3's recipe);
  guidance   classifier-free guidance and the conditional one-call design (``bench study guidance``).
"""
