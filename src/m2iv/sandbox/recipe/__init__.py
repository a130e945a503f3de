"""The sandbox's training recipe (`m2iv sandbox build --from-scratch`): train.py runs the stages (vision, align,
meta, export), one module each, with their data, optimiser step, evaluation and private work-folder states. It
shares only the learning-rate schedule (m2iv.train.schedule) with the vector trainer."""
