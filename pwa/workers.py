"""What a worker process keeps between tasks: rebuilt problems and their compiled minimisers.

Tasks of one multi-start or scan all carry the same
:class:`~pwa.problem.PortableProblem`; a worker rebuilds it once (keyed by
its digest) and compiles one :class:`~pwa.optimize.Minimizer` per objective
structure, which every later task in that process reuses.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict

from .fit_result import FitConfig
from .optimize import Minimizer
from .problem import FitProblem, PortableProblem, objective_structure


#: Problems a worker process keeps (least recently used dropped first), each
#: with its compiled minimisers by objective structure.
WORKER_MEMO_SIZE = 4
_worker_memo: OrderedDict[str, tuple[FitProblem, dict[tuple, Minimizer]]] = OrderedDict()
_worker_lock = threading.Lock()


def _memo_entry(portable: PortableProblem) -> tuple[FitProblem, dict[tuple, Minimizer]]:
    """The memo entry of ``portable``, built if missing (the caller holds ``_worker_lock``)."""
    entry = _worker_memo.get(portable.digest)
    if entry is None:
        entry = _worker_memo[portable.digest] = (portable.build(), {})
        while len(_worker_memo) > WORKER_MEMO_SIZE:
            _worker_memo.popitem(last=False)
    _worker_memo.move_to_end(portable.digest)
    return entry


def worker_problem(portable: PortableProblem) -> FitProblem:
    """The problem of ``portable``, rebuilt once per process and then reused.

    Tasks of one multi-start or scan all carry the same problem; the memo
    (keyed by its digest) spares every task after the first in a worker the
    rebuild and, with :func:`worker_minimizer`, the compilation.
    """
    with _worker_lock:
        return _memo_entry(portable)[0]


def worker_minimizer(portable: PortableProblem, config: FitConfig) -> Minimizer:
    """A minimiser of ``config``'s objective on ``portable``'s problem, compiled once per process.

    Returns a shallow copy of the memoised minimiser with its arguments set
    to ``config``'s penalty strengths: it shares the compiled functions, and
    concurrent tasks in one process (threaded Dask workers) do not race on
    the arguments.
    """
    with _worker_lock:
        problem, compiled = _memo_entry(portable)
        key = objective_structure(config)
        if key not in compiled:
            compiled[key] = problem.minimizer(config)
        mz = copy.copy(compiled[key])
    mz.args = problem.arguments(config)
    return mz
