"""Which devices train: a tf.distribute strategy from --strategy and --num_cpu_devices.

Must run before anything initialises TensorFlow's devices: logical CPU devices cannot be
configured afterwards.

>>> strategy = make_strategy("mirrored", num_cpu_devices=2, batch_size=32)
>>> strategy.num_replicas_in_sync
2
"""

from pathlib import Path

import tensorflow as tf

from bert_keras.errors import UsageError


def make_strategy(name: str, num_cpu_devices: int, batch_size: int) -> tf.distribute.Strategy:
    if num_cpu_devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * num_cpu_devices
            )
        except RuntimeError:
            # Already initialised: fine only if the same split was made before (tests, notebooks).
            if len(tf.config.list_logical_devices("CPU")) != num_cpu_devices:
                raise UsageError(
                    f"--num_cpu_devices={num_cpu_devices}: TensorFlow's devices were already "
                    f"initialised in this process; start a new process."
                ) from None
    gpus = tf.config.list_logical_devices("GPU")
    if name == "default" or (name == "auto" and not gpus):
        strategy = tf.distribute.get_strategy()
    elif gpus:
        strategy = tf.distribute.MirroredStrategy([d.name for d in gpus])
    else:
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        # NCCL is for GPUs; CPU replicas reduce through one device.
        strategy = tf.distribute.MirroredStrategy(
            cpus, cross_device_ops=tf.distribute.ReductionToOneDevice()
        )
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise UsageError(
            f"--batch_size={batch_size} is not divisible by the {replicas} replicas of "
            f"--strategy={name}; use a multiple of {replicas}, e.g. "
            f"--batch_size={batch_size - batch_size % replicas or replicas}."
        )
    return strategy


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: the CPU multiplies bfloat16 matrices natively (twice fp32's rate)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in cpuinfo.split() for flag in ("avx512_bf16", "amx_bf16"))


def dtype_policy(mixed_precision: str) -> str:
    """The Keras dtype policy for --mixed_precision."""
    if mixed_precision == "auto":
        if tf.config.list_logical_devices("GPU"):
            mixed_precision = "float16"
        else:
            mixed_precision = "bfloat16" if cpu_has_bf16() else "off"
    return {"off": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}[
        mixed_precision
    ]
