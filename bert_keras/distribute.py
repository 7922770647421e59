"""Which devices train: a tf.distribute strategy from --strategy and --num_cpu_devices.

Must run before anything initialises TensorFlow's devices: logical CPU devices cannot be
configured afterwards, and MultiWorkerMirroredStrategy must start its server first.

Multi-worker: TF_CONFIG names the cluster and this task; worker 0 is the chief (TensorFlow's
convention), the only one that writes the run directory.

>>> strategy = make_strategy("mirrored", num_cpu_devices=2, batch_size=32)
>>> strategy.num_replicas_in_sync
2
"""

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

from bert_keras import backup, multi_worker
from bert_keras.errors import TrainingError, UsageError


def make_strategy(
    name: str, num_cpu_devices: int, batch_size: int, accumulation: int = 1
) -> tf.distribute.Strategy:
    """`accumulation`: --gradient_accumulation_steps, micro-batches a batch is split into."""
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
    if name == "multi_worker":
        check_tf_config(os.environ.get("TF_CONFIG"))
        multi_worker.apply()
        # Collectives ride on gRPC between the workers; the coordination service's heartbeats
        # turn a dead worker into an UnavailableError on the others within seconds.
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        return _check_batch(strategy, name, batch_size, accumulation)
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
    return _check_batch(strategy, name, batch_size, accumulation)


def _check_batch(strategy, name: str, batch_size: int, accumulation: int) -> tf.distribute.Strategy:
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise UsageError(
            f"--batch_size={batch_size} is not divisible by the {replicas} replicas of "
            f"--strategy={name}; use a multiple of {replicas}, e.g. "
            f"--batch_size={batch_size - batch_size % replicas or replicas}."
        )
    per_replica = batch_size // replicas
    if per_replica % accumulation:
        divisors = [d for d in range(2, per_replica + 1) if per_replica % d == 0][:6]
        raise UsageError(
            f"--gradient_accumulation_steps={accumulation} does not split the {per_replica} rows "
            f"each of the {replicas} replica(s) gets of --batch_size={batch_size} into equal "
            f"micro-batches; use one of {', '.join(map(str, divisors)) or '1'}, or change "
            f"--batch_size."
        )
    return strategy


def check_tf_config(tf_config: str | None):
    """A UsageError when TF_CONFIG is missing or does not name a worker of a worker cluster."""
    if not tf_config:
        raise UsageError(
            "--strategy=multi_worker needs TF_CONFIG, the cluster and this task, e.g. "
            """TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": """
            """{"type": "worker", "index": 0}}' (see README, Training on several machines)."""
        )
    try:
        config = json.loads(tf_config)
        workers = config["cluster"]["worker"]
        task = config["task"]
        if task["type"] != "worker" or not 0 <= int(task["index"]) < len(workers):
            raise ValueError(f"task {task} is not one of the {len(workers)} workers")
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(
            f"TF_CONFIG is not a worker cluster ({type(e).__name__}: {e}); give "
            """{"cluster": {"worker": [host:port, ...]}, "task": {"type": "worker", "index": i}}."""
        ) from None


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True except on the workers other than worker 0 of a multi-worker cluster."""
    return not is_multi_worker(strategy) or task_id(strategy) == 0


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """A MultiWorkerMirroredStrategy with more than one worker."""
    return (
        isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and strategy.extended._in_multi_worker_mode()
    )


def task_id(strategy: tf.distribute.Strategy) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    return resolver.task_id if resolver is not None and resolver.task_id is not None else 0


@contextlib.contextmanager
def work_dir(strategy: tf.distribute.Strategy, output_dir: Path):
    """The directory this process writes: the run directory on the chief; elsewhere a temporary
    one, removed when the block ends (every worker saves, as some saves are collective; only the
    chief's files are kept)."""
    if is_chief(strategy):
        yield output_dir
        return
    tmp = Path(tempfile.mkdtemp(prefix=f"bert_keras-worker{task_id(strategy)}-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def per_replica(strategy: tf.distribute.Strategy, make_dataset, batches: list):
    """`make_dataset(batches)` under one process; under multi-worker, each worker's own
    dataset, of only its replicas' rows of every global batch (row i of a batch goes to replica
    i mod replicas), made on that worker: no worker reads the others' rows."""
    if not is_multi_worker(strategy):
        return make_dataset(batches)

    def local(context: tf.distribute.InputContext):
        replicas = context.num_replicas_in_sync
        mine = replicas // context.num_input_pipelines  # this worker's replicas
        first = context.input_pipeline_id * mine
        # Consecutive elements go to this worker's replicas in turn.
        return make_dataset([b[r::replicas] for b in batches for r in range(first, first + mine)])

    return strategy.distribute_datasets_from_function(local)


# How a multi-worker collective reports a worker that died or cannot be reached.
LOST_WORKER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.AbortedError,
    tf.errors.DeadlineExceededError,
    tf.errors.CancelledError,
)


@contextlib.contextmanager
def reporting_lost_workers(strategy: tf.distribute.Strategy, backups: Path):
    """Under multi-worker training, a lost worker ends this one with a TrainingError that says
    what to do (and from which of the chief's `backups` they resume), instead of a page of gRPC
    errors."""
    try:
        yield
    except LOST_WORKER_ERRORS as e:
        if not is_multi_worker(strategy):
            raise
        last = backup.latest(backups)
        where = f"from the last backup ({last.name})" if last else "from the start (no backup yet)"
        raise TrainingError(
            f"lost contact with another worker ({type(e).__name__}: the others stopped answering);"
            f" restart every worker with the same command and TF_CONFIG: they resume {where}."
        ) from None


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
