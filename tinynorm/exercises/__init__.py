r"""Classroom exercises: derive a backward, write it, and let ``check`` grade it.

Eight exercises of rising difficulty (the notebooks are in ``notebooks/exercises/``):

1. ``mul_broadcast``: the backward of ``a * b`` with broadcasting (unbroadcast);
2. ``rmsnorm``: RMSNorm, input and weight;
3. ``rmsnorm_affine``: RMSNorm with a scale and a shift;
4. ``layernorm``: LayerNorm;
5. ``tanh_alpha``: ``tanh(alpha * n)`` after RMSNorm, the gradient of ``alpha`` and ``x``;
6. ``batchnorm``: BatchNorm in training mode;
7. ``own_norm``: a variant of your own, registered with ``register_norm``;
8. ``rmsnorm_double``: RMSNorm's backward written with ``namespace_of`` only, so that it
   runs on Tensors and passes ``tn.gradgradcheck`` and the third-order check.

``check(name, student_fn)`` compares the student's gradients with finite differences
of tinynorm's own forward, on several shapes, and prints which gradient is wrong,
where, by how much, and, when the numbers match a known common mistake, names it::

    from tinynorm.exercises import check
    check("layernorm", layernorm_backward)      # truthy when it passed

The how-to for students, instructors and exercise authors (grading with
``pytest -m ex_layernorm``, ``TINYNORM_STUDENT``, ``TINYNORM_STRICT``, generating the
notebooks, nbgrader and Otter-Grader assignments from ``classroom.py``) is
``tinynorm/exercises/README.md``.
"""

from .catalog import EXERCISES, MISTAKES, Exercise, Mistake, get_exercise
from .checker import CheckResult, ExerciseFailedError, check, register, unregister

__all__ = [
    "EXERCISES",
    "MISTAKES",
    "CheckResult",
    "Exercise",
    "ExerciseFailedError",
    "Mistake",
    "check",
    "get_exercise",
    "register",
    "unregister",
]
