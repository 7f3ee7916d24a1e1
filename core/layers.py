"""Layer specs of the recipe, with the shape and parameter arithmetic the API needs without TensorFlow.

Each class is one recipe ``type``; the worker's builder turns it into the Keras layer(s) of the
same name. ``output_shape`` raises ``ValueError`` for an input it cannot take, which the API
reports at that layer's index.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Self, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

Shape = tuple[int, ...]
ActivationName = Literal["sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu", "gelu", "swish", "softmax", "linear"]
InitializerName = Literal[
    "glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_uniform", "lecun_normal", "zeros"
]

#: A path into the input as (parent link, key) pairs, so a deep input is walked without copying its path.
_Link = tuple["_Link | None", int | str]


def nul_errors(data: object, limit: int = 10) -> list[InitErrorDetails]:
    """Where the input's text (dict keys included) holds a NUL, walked without recursion so any depth is safe."""
    errors: list[InitErrorDetails] = []
    stack: list[tuple[_Link | None, object]] = [(None, data)]  # (path as (parent, key) links, node)
    while stack and len(errors) < limit:
        link, node = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                loc: list[int | str] = []
                while link is not None:
                    link, key = link
                    loc.append(key)
                errors.append(
                    InitErrorDetails(
                        type=PydanticCustomError("nul_character", "text must not contain a NUL (\\u0000) character"),
                        loc=tuple(reversed(loc)),
                        input=node,
                    )
                )
        elif isinstance(node, dict):
            for key, value in reversed(list(node.items())):
                stack.append(((link, key), key if isinstance(key, str) and "\x00" in key else value))
        elif isinstance(node, (list, tuple)):
            stack.extend(((link, i), value) for i, value in reversed(list(enumerate(node))))
    return errors


class NulFree(BaseModel):
    """Text holding a NUL is refused everywhere a client's input is validated: PostgreSQL cannot store it
    (a ``DataError`` after validation), and no name, path or option needs one."""

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        errors = nul_errors(data) if isinstance(data, (dict, list)) else []
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return data


class Strict(NulFree):
    """Unknown fields are errors: a misspelt option silently ignored would train the wrong model.

    Types are strict: ``"300"`` is not a number, ``true`` not an integer, ``3.0`` not an integer, ``1`` not a
    boolean. An integer may stand where a float belongs (pydantic's strict mode allows it).
    """

    model_config = ConfigDict(extra="forbid", strict=True)


def _tuple_from_list(value: object) -> object:
    """JSON has no tuples: a list stands for one (strict mode alone would refuse it)."""
    return tuple(value) if isinstance(value, list) else value


#: For a fixed-length ``tuple`` field: the JSON array a client sends is that tuple.
FromList = BeforeValidator(_tuple_from_list)


#: LeakyReLU's slope for negative inputs when a recipe gives none: Keras's default (tf_keras ``LeakyReLU``;
#: the seed's text uses 0.2 in its example). The activation, the layer and the builder all read this one.
LEAKY_RELU_ALPHA = 0.3


class LeakyReLUActivation(Strict):
    """``{"type": "leaky_relu", "alpha": 0.2}``; the bare string means ``LEAKY_RELU_ALPHA``."""

    type: Literal["leaky_relu"]
    alpha: float = Field(LEAKY_RELU_ALPHA, ge=0, lt=1)


Activation = Union[ActivationName, LeakyReLUActivation]


def activation_name(activation: Activation) -> str:
    return activation if isinstance(activation, str) else activation.type


class VarianceScaling(Strict):
    """Seed: He with fan_avg is ``variance_scaling(scale=2, mode="fan_avg")``."""

    type: Literal["variance_scaling"]
    scale: float = Field(1.0, gt=0, le=100)
    mode: Literal["fan_in", "fan_out", "fan_avg"] = "fan_in"
    distribution: Literal["uniform", "truncated_normal", "untruncated_normal"] = "truncated_normal"


class RandomNormal(Strict):
    """The seed's vanishing-gradient setup: N(0, 1) weights under sigmoids."""

    type: Literal["random_normal"]
    mean: float = Field(0.0, ge=-100, le=100)
    stddev: float = Field(0.05, gt=0, le=100)


Initializer = Union[InitializerName, Annotated[Union[VarianceScaling, RandomNormal], Field(discriminator="type")]]


def initializer_name(init: Initializer) -> str:
    return init if isinstance(init, str) else init.type


class Regularization(Strict):
    """Penalties on kernels. L1 drives weights to exactly zero (seed: "Sparse models"), which pruning then keeps.

    ``l1_l2: [l1, l2]`` is the same as giving both.
    """

    l1: float = Field(0.0, ge=0, le=1)
    l2: float = Field(0.0, ge=0, le=1)
    l1_l2: Annotated[tuple[Annotated[float, Field(ge=0, le=1)], Annotated[float, Field(ge=0, le=1)]], FromList] | None = None

    @model_validator(mode="after")
    def _unpack(self) -> Self:
        if self.l1_l2 is not None:
            if self.l1 or self.l2:
                raise ValueError("give l1_l2, or l1 and l2, not both")
            self.l1, self.l2 = self.l1_l2
            self.l1_l2 = None
        return self


class MaxNorm(Strict):
    type: Literal["max_norm"]
    max_value: float = Field(2.0, gt=0, le=1000)
    axis: int = 0


class LayerBase(Strict):
    name: str | None = Field(None, pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$", description="Defaults to '<type>_<index>'.")

    @property
    def given_name(self) -> str:
        """``name``, which a validated recipe always has (``ModelSpec`` names the unnamed layers)."""
        if self.name is None:
            raise ValueError(f"an unnamed {type(self).__name__} outside a validated recipe")
        return self.name

    def output_shape(self, input_shape: Shape) -> Shape:
        return input_shape

    def param_count(self, input_shape: Shape) -> int:
        return 0

    def flops(self, input_shape: Shape) -> int:
        """Floating-point operations per sample, a multiply-add counted as 2 (``flops`` in README). Only the
        kernels of dense and conv2d layers count: bias adds, activations, batch normalization and pooling are
        one operation per value they output, a few per cent at most of the models here, and are left out."""
        return 0

    def activation_size(self, input_shape: Shape) -> int:
        """Values per sample this layer keeps from the forward pass until backprop has used them
        (``core.footprint`` multiplies by the batch); by default its output."""
        return math.prod(self.output_shape(input_shape))


#: Tensors of the output's size an activation keeps for its gradient: ReLU, sigmoid, tanh, ELU, SELU and
#: softmax need only their output; swish keeps its input too, gelu its input and erf term, and
#: ``leaky_relu`` on a kernel layer is a separate LeakyReLU layer after the linear output.
_KEPT_PER_OUTPUT = {"swish": 2, "gelu": 3, "leaky_relu": 2}


def _kept(activation: Activation) -> int:
    return _KEPT_PER_OUTPUT.get(activation_name(activation), 1)


class KernelLayer(LayerBase):
    """Options every layer with a kernel takes."""

    activation: Activation = "linear"
    kernel_initializer: Initializer = "glorot_uniform"
    use_bias: bool = True
    regularization: Regularization | None = Field(None, description="Overrides the recipe's global one.")
    kernel_constraint: MaxNorm | None = None

    def activation_size(self, input_shape: Shape) -> int:
        return math.prod(self.output_shape(input_shape)) * _kept(self.activation)


class DenseLayer(KernelLayer):
    type: Literal["dense"]
    units: int = Field(ge=1, le=65536)

    def output_shape(self, input_shape: Shape) -> Shape:
        return (*input_shape[:-1], self.units)

    def param_count(self, input_shape: Shape) -> int:
        return input_shape[-1] * self.units + (self.units if self.use_bias else 0)

    def flops(self, input_shape: Shape) -> int:
        return 2 * math.prod(input_shape[:-1]) * input_shape[-1] * self.units  # applied along the last axis


Size = Annotated[int, Field(ge=1, le=64)]
Pair = Union[Size, Annotated[tuple[Size, Size], FromList]]


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    first, second = value
    return (first, second)


def _spatial(size: int, window: int, stride: int, padding: str) -> int:
    return math.ceil(size / stride) if padding == "same" else (size - window) // stride + 1


def _needs_image(layer: str, input_shape: Shape) -> None:
    if len(input_shape) != 3:
        raise ValueError(
            f"{layer} needs (height, width, channels) input, not {list(input_shape)}; "
            "reshape the data (dataset.reshape or a reshape layer) first"
        )


class Conv2DLayer(KernelLayer):
    type: Literal["conv2d"]
    filters: int = Field(ge=1, le=4096)
    kernel_size: Pair = 3
    strides: Pair = 1
    padding: Literal["valid", "same"] = "valid"

    def output_shape(self, input_shape: Shape) -> Shape:
        _needs_image("conv2d", input_shape)
        (kh, kw), (sh, sw) = _pair(self.kernel_size), _pair(self.strides)
        h, w = _spatial(input_shape[0], kh, sh, self.padding), _spatial(input_shape[1], kw, sw, self.padding)
        if h < 1 or w < 1:
            raise ValueError(f"a {kh}×{kw} kernel does not fit a {input_shape[0]}×{input_shape[1]} input")
        return (h, w, self.filters)

    def param_count(self, input_shape: Shape) -> int:
        kh, kw = _pair(self.kernel_size)
        return kh * kw * input_shape[-1] * self.filters + (self.filters if self.use_bias else 0)

    def flops(self, input_shape: Shape) -> int:
        h, w, _ = self.output_shape(input_shape)
        kh, kw = _pair(self.kernel_size)
        return 2 * h * w * kh * kw * input_shape[-1] * self.filters


class MaxPooling2DLayer(LayerBase):
    type: Literal["max_pooling2d"]
    pool_size: Pair = 2
    strides: Pair | None = None
    padding: Literal["valid", "same"] = "valid"

    def output_shape(self, input_shape: Shape) -> Shape:
        _needs_image("max_pooling2d", input_shape)
        (ph, pw) = _pair(self.pool_size)
        sh, sw = _pair(self.strides) if self.strides is not None else (ph, pw)
        h, w = _spatial(input_shape[0], ph, sh, self.padding), _spatial(input_shape[1], pw, sw, self.padding)
        if h < 1 or w < 1:
            raise ValueError(f"a {ph}×{pw} pool does not fit a {input_shape[0]}×{input_shape[1]} input")
        return (h, w, input_shape[2])


class GlobalAveragePooling2DLayer(LayerBase):
    type: Literal["global_average_pooling2d"]

    def output_shape(self, input_shape: Shape) -> Shape:
        _needs_image("global_average_pooling2d", input_shape)
        return (input_shape[2],)


class FlattenLayer(LayerBase):
    type: Literal["flatten"]

    def output_shape(self, input_shape: Shape) -> Shape:
        return (math.prod(input_shape),)

    def activation_size(self, input_shape: Shape) -> int:
        return 0  # a view of its input's buffer


class ReshapeLayer(LayerBase):
    type: Literal["reshape"]
    target_shape: list[Annotated[int, Field(ge=1, le=1_000_000)]] = Field(min_length=1, max_length=4)

    def output_shape(self, input_shape: Shape) -> Shape:
        if math.prod(self.target_shape) != math.prod(input_shape):
            raise ValueError(f"cannot reshape {list(input_shape)} ({math.prod(input_shape)} values) to {self.target_shape}")
        return tuple(self.target_shape)

    def activation_size(self, input_shape: Shape) -> int:
        return 0  # a view of its input's buffer: the layers after it pay for the shape


class BatchNormalizationLayer(LayerBase):
    """Seed: BN adds 4 parameters per feature, 2 of them (moving mean/variance) not trained by backprop.

    A "feature" is one position along ``axis``; statistics are taken over every other axis. On a [28, 28]
    image before the flatten, the default ``axis: -1`` keeps the seed's "28 means and 28 std devs" (one per
    column, pooled over the batch and the rows: 4 × 28 = 112 parameters); ``axis: [1, 2]`` normalizes each
    of the 784 pixels on its own over the batch, as Keras does: γ, β, moving mean and variance of 28 × 28
    values each (tf.keras stores them as (1, 28, 28)), 4 × 784 = 3,136 parameters, half of them trainable.
    """

    type: Literal["batch_normalization"]
    momentum: float = Field(0.99, gt=0, lt=1)
    epsilon: float = Field(1e-3, gt=0, le=1)
    axis: int | list[int] = -1
    center: bool = True
    scale: bool = True

    def _axes(self, input_shape: Shape) -> list[int]:
        rank = len(input_shape) + 1  # with the batch axis
        axes = [self.axis] if isinstance(self.axis, int) else list(self.axis)
        out = []
        for axis in axes:
            real = axis if axis >= 0 else rank + axis
            if not 1 <= real < rank:
                raise ValueError(f"axis {axis} is not a feature axis of an input of shape {list(input_shape)}")
            out.append(real)
        return out

    def output_shape(self, input_shape: Shape) -> Shape:
        self._axes(input_shape)
        return input_shape

    def param_count(self, input_shape: Shape) -> int:
        size = math.prod(input_shape[a - 1] for a in self._axes(input_shape))
        return size * (2 + int(self.center) + int(self.scale))

    def activation_size(self, input_shape: Shape) -> int:
        return 2 * math.prod(input_shape)  # the normalized input and the output (unfused below rank 4)


class ActivationLayer(LayerBase):
    type: Literal["activation"]
    activation: Activation

    def activation_size(self, input_shape: Shape) -> int:
        return math.prod(input_shape) * _kept(self.activation)


class LeakyReLULayer(LayerBase):
    """α defaults to ``LEAKY_RELU_ALPHA``, Keras's default."""

    type: Literal["leaky_relu"]
    alpha: float = Field(LEAKY_RELU_ALPHA, ge=0, lt=1)


class PReLULayer(LayerBase):
    """α is learned per unit; TF-MOT has no registry entry for it, so it is never pruned."""

    type: Literal["prelu"]

    def param_count(self, input_shape: Shape) -> int:
        return math.prod(input_shape)

    def activation_size(self, input_shape: Shape) -> int:
        return 3 * math.prod(input_shape)  # relu(x), the negative part and the sum


class RReLULayer(LayerBase):
    """Randomized leaky ReLU: a random slope in [lower, upper] per element while training, the mean at inference.

    Exported as a stock ``LeakyReLU`` with α = (lower + upper) / 2, so the model loads without custom code.
    """

    type: Literal["rrelu"]
    lower: float = Field(1 / 8, ge=0, lt=1)
    upper: float = Field(1 / 3, ge=0, lt=1)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.lower > self.upper:
            raise ValueError("lower must not be above upper")
        return self

    def activation_size(self, input_shape: Shape) -> int:
        return 3 * math.prod(input_shape)  # the random slopes, inputs × slopes and the output


class ELULayer(LayerBase):
    type: Literal["elu"]
    alpha: float = Field(1.0, gt=0, le=10)


class DropoutLayer(LayerBase):
    type: Literal["dropout"]
    rate: float = Field(ge=0, lt=1)

    def activation_size(self, input_shape: Shape) -> int:
        return 2 * math.prod(input_shape)  # the output and the keep mask


class AlphaDropoutLayer(LayerBase):
    """Dropout that keeps SELU's self-normalisation (mean and variance of the inputs)."""

    type: Literal["alpha_dropout"]
    rate: float = Field(ge=0, lt=1)

    def activation_size(self, input_shape: Shape) -> int:
        return 2 * math.prod(input_shape)  # the output and the keep mask


Layer = Annotated[
    Union[
        DenseLayer,
        Conv2DLayer,
        MaxPooling2DLayer,
        GlobalAveragePooling2DLayer,
        FlattenLayer,
        ReshapeLayer,
        BatchNormalizationLayer,
        ActivationLayer,
        LeakyReLULayer,
        PReLULayer,
        RReLULayer,
        ELULayer,
        DropoutLayer,
        AlphaDropoutLayer,
    ],
    Field(discriminator="type"),
]

#: Layers whose kernels TF-MOT's registry can prune; every other layer is left dense.
PRUNABLE_TYPES = frozenset({"dense", "conv2d"})
