"""The gradcheck's own specification: it passes a correct backward and catches each kind of wrong one.

Each wrong backward below is a bug people write by hand: a flipped sign, a product
rule with a term dropped, a backward that ignores the values of the upstream
gradient, one that is not linear in it, one that returns a constant.
"""

from __future__ import annotations

import numpy as np
import pytest

import tinynorm as tn


# ---- functions with a known derivative, and wrong backwards for them ---------------------------------
class Square(tn.Function):
    """y = x**2, dy/dx = 2x."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


class SquareWrongSign(Square):
    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return -2 * x * grad


class SquareIgnoresUpstream(Square):
    """Returns dy/dx itself, as if the upstream gradient were all ones."""

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x


class SquareNonLinearInGrad(Square):
    """Right for a one-hot upstream gradient (1 * |1| = 1), wrong for any other."""

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad * tn.backend.namespace_of(grad).abs(grad)


class SquarePlusConstant(Square):
    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad + 0.25


class XTanhX(tn.Function):
    """y = x tanh(x); by the product rule dy/dx = tanh(x) + x (1 - tanh(x)**2)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * tn.backend.namespace_of(x).tanh(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        t = tn.backend.namespace_of(x).tanh(x)
        return grad * (t + x * (1 - t * t))


class XTanhXMissingTerm(XTanhX):
    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * tn.backend.namespace_of(x).tanh(x)  # the x (1 - tanh**2) term is dropped


def _x(values=(0.5, -1.0, 2.0)):
    return tn.tensor(list(values), requires_grad=True)


def _failed_checks(fn, x, fast):
    result = tn.gradcheck(fn, x, fast=fast, raise_exception=False)
    assert not result.passed
    return {f.check for f in result.failures}


# ---- correct backwards pass ------------------------------------------------------------------------------
@pytest.mark.parametrize("fast", [False, True], ids=["full", "fast"])
@pytest.mark.parametrize("fn", [Square.apply, XTanhX.apply], ids=["square", "x_tanh_x"])
def test_a_correct_backward_passes(backend, fn, fast):
    assert tn.gradcheck(fn, tn.randn(2, 3, requires_grad=True), fast=fast) is True


def test_a_passing_result_reports_errors_near_float64_round_off():
    result = tn.gradcheck(XTanhX.apply, _x(), raise_exception=False)
    assert result.passed and bool(result) is True
    assert result.max_abs_error < 1e-8


# ---- each wrong backward is caught by both modes -------------------------------------------------------
@pytest.mark.parametrize("fast", [False, True], ids=["full", "fast"])
@pytest.mark.parametrize(
    "fn",
    [SquareWrongSign.apply, XTanhXMissingTerm.apply, SquareIgnoresUpstream.apply, SquareNonLinearInGrad.apply],
    ids=["wrong_sign", "missing_term", "ignores_upstream", "non_linear_in_grad"],
)
def test_a_wrong_backward_is_caught(backend, fn, fast):
    with pytest.raises(tn.GradcheckError):
        tn.gradcheck(fn, tn.randn(2, 3, requires_grad=True), fast=fast)


def test_full_mode_catches_a_backward_that_ignores_upstream_in_the_jacobian():
    # With a one-hot upstream at output i, input j != i must get 0; this backward gives 2 x_j.
    assert "jacobian" in _failed_checks(SquareIgnoresUpstream.apply, _x(), fast=False)


def test_only_the_random_upstream_check_sees_a_backward_non_linear_in_grad():
    # Every Jacobian row comes from a one-hot upstream, where grad * |grad| == grad.
    assert _failed_checks(SquareNonLinearInGrad.apply, _x(), fast=False) == {"random upstream"}


def test_for_one_element_only_zero_and_random_upstream_see_an_ignored_upstream():
    # x of one element: the one-hot upstream is 1, so the Jacobian is right by accident.
    assert _failed_checks(SquareIgnoresUpstream.apply, _x([1.5]), fast=False) == {"zero upstream", "random upstream"}


@pytest.mark.parametrize("fast", [False, True], ids=["full", "fast"])
def test_zero_upstream_check_catches_a_backward_returning_a_constant(fast):
    result = tn.gradcheck(SquarePlusConstant.apply, _x(), fast=fast, raise_exception=False)
    (zero,) = [f for f in result.failures if f.check == "zero upstream"]
    assert (zero.analytical, zero.numerical, zero.abs_error) == (0.25, 0.0, 0.25)


# ---- what a failure says -------------------------------------------------------------------------------
def test_the_error_message_names_input_element_values_and_errors():
    # J = diag(2x) but the backward gives diag(-2x); the worst entry is at x = 2: -4 vs 4.
    with pytest.raises(tn.GradcheckError) as info:
        tn.gradcheck(SquareWrongSign.apply, _x())
    message = str(info.value)
    assert "'input 0', jacobian check at output[2] w.r.t. input 0[2]: analytical -4 vs numerical 4" in message
    assert "(abs error 8, rel error 2)" in message
    assert "allowed |a - n| <= 1e-05 + 0.001 * |n|" in message


def test_the_result_carries_the_numbers_when_not_raising():
    result = tn.gradcheck(SquareWrongSign.apply, _x(), raise_exception=False)
    assert isinstance(result, tn.GradcheckResult) and not result
    (jac,) = [f for f in result.failures if f.check == "jacobian"]
    assert (jac.input, jac.output_index, jac.index) == ("input 0", (2,), (2,))
    assert jac.analytical == -4.0
    assert jac.numerical == pytest.approx(4.0, abs=1e-8)
    assert jac.abs_error == pytest.approx(8.0, abs=1e-8)
    assert jac.rel_error == pytest.approx(2.0, abs=1e-8)
    assert result.max_abs_error >= 8.0
    assert result.failures == tn.GradcheckError(result).result.failures


class ScaleWrongAtTwo(tn.Function):
    """y = x * w with w of shape (5,); the backward triples dw[2], and only it."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x * w

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        dw = (grad * x).sum(axis=0) * np.array([1.0, 1.0, 3.0, 1.0, 1.0])
        return grad * w, dw


class ScaleModule(tn.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = tn.nn.Parameter(tn.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))

    def forward(self, x):
        return ScaleWrongAtTwo.apply(x, self.weight)


def test_a_jacobian_failure_names_the_output_and_input_elements_each_in_its_own_shape():
    # d y[i, 2] / d weight[2] = x[i, 2], reported as 3 x[i, 2]; the error is largest in row 1.
    x = tn.tensor([[0.1, 0.2, 0.3, 0.4, 0.5], [0.6, 0.7, 2.0, 0.9, 1.0]])
    result = tn.gradcheck(ScaleModule(), x, raise_exception=False)
    (jac,) = [f for f in result.failures if f.check == "jacobian"]
    assert (jac.input, jac.output_index, jac.index) == ("weight", (1, 2), (2,))
    assert "'weight', jacobian check at output[1, 2] w.r.t. weight[2]: analytical 6 vs numerical 2" in str(jac)
    (upstream,) = [f for f in result.failures if f.check == "random upstream"]
    assert upstream.index == (2,) and upstream.output_index is None and "at weight[2]:" in str(upstream)


@pytest.mark.parametrize(
    ("argument", "value", "error", "message"),
    [
        ("eps", "1e-6", TypeError, r"gradcheck: eps must be a real number, got str '1e-6'"),
        ("eps", None, TypeError, r"gradcheck: eps must be a real number, got NoneType"),
        ("eps", True, TypeError, r"gradcheck: eps must be a real number, got bool"),
        ("eps", 0.0, ValueError, r"gradcheck: eps must be a finite number > 0 \(the finite-difference step\), got 0.0"),
        ("eps", float("nan"), ValueError, r"gradcheck: eps must be a finite number > 0 .* got nan"),
        ("eps", -1e-6, ValueError, r"gradcheck: eps must be a finite number > 0 .* got -1e-06"),
        ("atol", -1.0, ValueError, r"gradcheck: atol must be a finite number >= 0, got -1.0"),
        ("atol", float("inf"), ValueError, r"gradcheck: atol must be a finite number >= 0, got inf"),
        ("rtol", "0.1", TypeError, r"gradcheck: rtol must be a real number, got str"),
        ("rtol", float("nan"), ValueError, r"gradcheck: rtol must be a finite number >= 0, got nan"),
    ],
)
def test_a_bad_step_or_tolerance_is_refused_naming_it(argument, value, error, message):
    with pytest.raises(error, match=message):
        tn.gradcheck(Square.apply, _x(), **{argument: value})


def test_zero_tolerances_are_allowed():
    # A function linear in x: the central difference is exact to round-off, well under rtol=1e-6.
    assert tn.gradcheck(lambda x: x * 3.0, _x(), atol=0, rtol=1e-6) is True


def test_the_error_carries_the_result():
    with pytest.raises(tn.GradcheckError) as info:
        tn.gradcheck(SquareWrongSign.apply, _x(), fast=True)
    assert info.value.result.mode == "fast" and not info.value.result.passed
    assert {f.check for f in info.value.result.failures} == {"projection"}


def test_a_second_input_is_named_by_its_position():
    def only_b_is_wrong(a, b):
        return a * SquareWrongSign.apply(b)

    result = tn.gradcheck(only_b_is_wrong, (_x(), _x([1.0, 2.0, 3.0])), raise_exception=False)
    assert {f.input for f in result.failures} == {"input 1"}


# ---- what it checks, and what it refuses -------------------------------------------------------------
def test_float32_inputs_warn():
    x = tn.tensor([0.5, -1.0, 2.0], dtype="float32", requires_grad=True)
    with pytest.warns(tn.GradcheckWarning, match="float32"):
        tn.gradcheck(Square.apply, x, eps=1e-2, atol=1e-2, rtol=1e-2, raise_exception=False)


def test_float64_inputs_do_not_warn(recwarn):
    tn.gradcheck(Square.apply, _x())
    assert not [w for w in recwarn if issubclass(w.category, tn.GradcheckWarning)]


def test_nothing_requiring_grad_is_an_error():
    with pytest.raises(ValueError, match="nothing to check"):
        tn.gradcheck(Square.apply, tn.tensor([1.0, 2.0]))


class Scale(tn.nn.Module):
    """y = x * weight, with a weight whose backward can be made wrong."""

    def __init__(self, weight_fn=Square.apply):
        super().__init__()
        self.weight = tn.nn.Parameter(tn.tensor([1.5, -0.5, 2.0]))
        self.weight_fn = weight_fn

    def forward(self, x):
        return x * self.weight_fn(self.weight)


class Outer(tn.nn.Module):
    def __init__(self, weight_fn=Square.apply):
        super().__init__()
        self.inner = Scale(weight_fn)

    def forward(self, x):
        return self.inner(x)


@pytest.mark.parametrize("fast", [False, True], ids=["full", "fast"])
def test_a_modules_parameters_are_checked_by_dotted_name(fast):
    assert tn.gradcheck(Outer(), _x(), fast=fast) is True
    result = tn.gradcheck(Outer(SquareWrongSign.apply), _x(), fast=fast, raise_exception=False)
    assert {f.input for f in result.failures} == {"inner.weight"}


def test_a_parameter_is_checked_even_when_no_input_requires_grad():
    result = tn.gradcheck(Scale(SquareWrongSign.apply), tn.tensor([1.0, 2.0, 3.0]), raise_exception=False)
    assert {f.input for f in result.failures} == {"weight"}


def test_a_read_only_broadcast_view_is_never_perturbed_in_place():
    # Its 6 elements share 3 memory locations: an in-place x[j] += eps would move two at once (or raise).
    view = np.broadcast_to(np.array([0.5, -1.0, 2.0]), (2, 3))
    assert not view.flags.writeable
    x = tn.Tensor(view, requires_grad=True)
    assert tn.gradcheck(Square.apply, x) is True
    assert tn.gradcheck(Square.apply, x, fast=True) is True
    assert x.data is view
    np.testing.assert_array_equal(view, [[0.5, -1.0, 2.0], [0.5, -1.0, 2.0]])


def test_inputs_and_their_grad_are_left_as_they_were():
    x = _x()
    x.grad = np.array([7.0, 8.0, 9.0])
    tn.gradcheck(Square.apply, x)
    np.testing.assert_array_equal(x.numpy(), [0.5, -1.0, 2.0])
    np.testing.assert_array_equal(x.grad, [7.0, 8.0, 9.0])


# ---- the Jacobians themselves -----------------------------------------------------------------------------
def _product_inputs():
    return tn.tensor([1.0, 2.0, 3.0], requires_grad=True), tn.tensor([4.0, 5.0, 6.0], requires_grad=True)


def test_analytical_jacobian_of_a_product_is_the_other_factor_on_the_diagonal(backend):
    jac_x, jac_y = tn.analytical_jacobian(lambda x, y: x * y, _product_inputs())
    np.testing.assert_array_equal(jac_x, np.diag([4.0, 5.0, 6.0]))
    np.testing.assert_array_equal(jac_y, np.diag([1.0, 2.0, 3.0]))


def test_numerical_jacobian_of_a_product_is_the_other_factor_on_the_diagonal(backend):
    # x * y is linear in x, so the central difference is exact up to round-off (~1e-16 / eps).
    jac_x, jac_y = tn.numerical_jacobian(lambda x, y: x * y, _product_inputs())
    np.testing.assert_allclose(jac_x, np.diag([4.0, 5.0, 6.0]), rtol=0, atol=1e-9)
    np.testing.assert_allclose(jac_y, np.diag([1.0, 2.0, 3.0]), rtol=0, atol=1e-9)


def test_jacobians_have_one_row_per_output_and_one_column_per_input_element():
    x = tn.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    (numerical,) = tn.numerical_jacobian(lambda t: t.sum(axis=0), x)
    (analytical,) = tn.analytical_jacobian(lambda t: t.sum(axis=0), x)
    expected = np.array([[1, 0, 0, 1, 0, 0], [0, 1, 0, 0, 1, 0], [0, 0, 1, 0, 0, 1]], dtype=float)
    np.testing.assert_array_equal(analytical, expected)
    np.testing.assert_allclose(numerical, expected, rtol=0, atol=1e-9)
