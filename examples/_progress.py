"""Progress for the training examples: a tqdm bar when tqdm is installed, else a plain line
every tenth of the run (so a log or CI output still shows the loss going down)."""


class _Lines:
    def __init__(self, steps, desc):
        self.steps, self.desc, self.postfix = steps, desc, {}
        self.every = max(1, steps // 10)

    def __iter__(self):
        for i in range(self.steps):
            yield i
            if (i + 1) % self.every == 0 or i + 1 == self.steps:
                shown = " ".join(f"{k}={v}" for k, v in self.postfix.items())
                print(f"{self.desc}: step {i + 1}/{self.steps} {shown}", flush=True)

    def set_postfix(self, refresh=False, **values):
        self.postfix = {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in values.items()}


def progress(steps, desc):
    """``range(steps)`` that shows progress; ``.set_postfix(loss=...)`` adds values to it."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _Lines(steps, desc)
    return tqdm(range(steps), desc=desc, mininterval=0.25)
