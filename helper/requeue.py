"""A training command as a Slurm job that survives preemption and time limits: submitit's
checkpointing, used by `sweep.py --executor slurm`.

submitit starts the job with Slurm's warning signal (USR2, some time before a time limit or a
preemption) handled in this job process: it calls `checkpoint`, which asks the training process
to save its step (SIGUSR1: helper/trainer.py stops at the next step boundary and writes that step
into latest.pth), waits for it, and hands submitit the same command to requeue. The requeued
command resumes from latest.pth and ends bit for bit as an uninterrupted run. At most
`max_requeues` requeues; the training log says which requeue it runs (ASKD_REQUEUES).
"""
import io
import os
import signal
import subprocess

from submitit.core.utils import CommandFunction, FailedJobError, copy_process_streams
from submitit.helpers import DelayedSubmission

REQUEUES = "ASKD_REQUEUES"  # "n/max" in the training process's environment


class RequeuedCommand(CommandFunction):
    def __init__(self, command, cwd=None, max_requeues=3, requeues=0):
        super().__init__(command, cwd=cwd)
        self.max_requeues, self.requeues = int(max_requeues), int(requeues)
        self.process = None

    def __call__(self):
        env = dict(os.environ, **{REQUEUES: f"{self.requeues}/{self.max_requeues}"})
        print(f"The following command is sent: \"{' '.join(self.command)}\"", flush=True)
        with subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self.cwd,
                              env=env) as self.process:
            out, err = io.StringIO(), io.StringIO()
            copy_process_streams(self.process, out, err, True)
            code = self.process.wait()
        if code:
            raise FailedJobError(err.getvalue().strip())
        return out.getvalue().strip()

    def checkpoint(self, *args, **kwargs):
        """On Slurm's warning: the training saves its step and stops; then requeue, within bounds."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGUSR1)
            self.process.wait()
        if self.requeues >= self.max_requeues:
            print(f"not requeued: {self.requeues} requeue(s) already, the most sweep.py's --max_requeues allows",
                  flush=True)
            return None
        print(f"requeued ({self.requeues + 1} of at most {self.max_requeues})", flush=True)
        return DelayedSubmission(RequeuedCommand(self.command, self.cwd, self.max_requeues, self.requeues + 1))

    def __getstate__(self):  # the process of this run stays behind
        return {**self.__dict__, "process": None}
