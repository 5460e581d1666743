"""Where a run's numbers go: a plain-text log (one line per epoch), tensorboard, the console."""
import os
import sys

from tqdm import tqdm


class RunLogger:
    """Writes `log.txt` and tensorboard events in the run folder. Only rank 0 creates one."""

    def __init__(self, run_dir, tensorboard=True):
        self.path = os.path.join(run_dir, "log.txt")
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(log_dir=os.path.join(run_dir, "tensorboard"))

    def message(self, text):
        print(text, flush=True)
        self.write_lines([text])

    def write_lines(self, lines):
        with open(self.path, "a") as f:
            f.writelines(line + "\n" for line in lines)

    def epoch(self, epoch, scalars):
        """One line of `key value` pairs for the epoch, and the same scalars to tensorboard."""
        fields = " ".join(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}" for k, v in scalars.items())
        self.message(f"epoch {epoch} {fields}")
        if self.writer is not None:
            for key, value in scalars.items():
                self.writer.add_scalar(key, value, epoch)
            self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()


class Progress:
    """A tqdm bar on a TTY; a plain line every `every` steps otherwise."""

    def __init__(self, total, desc, every, enabled=True):
        tty = enabled and sys.stderr.isatty()
        self.bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True) if tty else None
        self.total, self.desc, self.every, self.enabled = total, desc, every, enabled
        self.step = 0

    def update(self, steps=1, **stats):
        """`steps` more steps are done; `stats` are the running figures."""
        self.step += steps
        text = " ".join(f"{k} {v:.4f}" for k, v in stats.items())
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(steps)
        elif self.enabled and (self.step % self.every < steps or self.step == self.total):
            print(f"{self.desc} [{self.step}/{self.total}] {text}", flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class NullLogger:
    """The logger of DDP ranks other than 0: they write nothing."""

    def message(self, text):
        pass

    def write_lines(self, lines):
        pass

    def epoch(self, epoch, scalars):
        pass

    def close(self):
        pass
