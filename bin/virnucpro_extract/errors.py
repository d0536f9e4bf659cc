"""The one error type: a rejected input rendered as the contract's one line, and the exit status that goes with it."""
from __future__ import annotations

# Exit status of a failure that a retry with a smaller token budget may cure (sysexits' EX_TEMPFAIL);
# conf/base.config retries it. Rejected input exits 1, which is never retried.
EXIT_RETRY = 75


class InputError(Exception):
    """A rejected input, rendered as the contract's one line:
    `error: <file>: <record or line>: <what is wrong> — <how to fix it>`.

    `exit_status` is 1 for bad input; EXIT_RETRY for the few failures a retry can cure.
    """

    def __init__(self, file, where, problem, fix, exit_status: int = 1):
        self.file, self.where, self.problem, self.fix = str(file), str(where), problem, fix
        self.exit_status = exit_status
        super().__init__(str(self))

    def __str__(self):
        return f"error: {self.file}: {self.where}: {self.problem} — {self.fix}"

    @classmethod
    def from_line(cls, line: str, exit_status: int = 1) -> InputError:
        """Parse a rendered line back (a worker process's error, passed on by its parent)."""
        body, _, fix = line.removeprefix("error: ").partition(" — ")
        file, where, problem = (body.split(": ", 2) + ["", ""])[:3]
        return cls(file, where, problem, fix, exit_status)

    def __reduce__(self):  # picklable: preflight's worker processes send their errors back
        return (type(self), (self.file, self.where, self.problem, self.fix, self.exit_status))


class InputErrors(Exception):
    """Several rejected inputs at once: preflight reports every bad file in one go."""

    def __init__(self, errors: list[InputError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))

    @property
    def exit_status(self) -> int:
        """EXIT_RETRY only when every error is retryable: a retry cannot cure bad input."""
        return EXIT_RETRY if all(e.exit_status == EXIT_RETRY for e in self.errors) else 1


def out_of_memory_error(exc: BaseException) -> InputError:
    """CUDA ran out of memory outside the batch splitting (model load, result copies): retryable."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else "CUDA out of memory"
    return InputError("GPU", "-", f"out of memory outside batch splitting ({first[:120]})",
                      "the pipeline retries the task with half the token budget; if it persists, free the GPU "
                      "or lower --toks_per_batch", EXIT_RETRY)


def no_common_id(dna_file, dna_side: str, first_id: str) -> InputError:
    """No id of a chunk's DNA side is among its protein ids: with --allow_missing every row would be dropped, and
    the chunk would give no feature at all while the run looked green."""
    return InputError(dna_file, f"record {first_id}", f"no id of the {dna_side} is in the chunk's protein FASTA, so "
                      "--allow_missing would merge 0 rows",
                      "check that the two files belong to the same chunk (ids like <record>_chunk_<k>F1)")
