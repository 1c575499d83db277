"""Reference models of the course notebooks."""
from .colorization import ConvTransposeNet, PoolUpsampleNet, UNet, transpose_padding  # noqa: F401
from .finetune import FineTuneDeepLabV3, deeplabv3_finetune, prepare_for_finetuning, trainable_parameters  # noqa: F401
