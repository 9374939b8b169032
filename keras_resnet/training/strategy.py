"""The devices a run computes on: the tf.distribute strategy, and what follows from it (XLA
on accelerators only, a warning where a mixed precision would be emulated on a CPU)."""

import tensorflow as tf

from keras_resnet.settings import STRATEGIES


def make_strategy(name, devices=None, cpu_devices=0, tpu=None):
    """Creates the tf.distribute strategy `name` (one of STRATEGIES).

    cpu_devices > 0 splits the CPU into that many logical devices first (a testing aid that
    lets `mirrored` run on a machine without GPUs); it must come before TensorFlow touches
    any device, so call this first thing in a program.
    """
    if name not in STRATEGIES:
        raise ValueError(f"--strategy: must be one of {STRATEGIES}, got {name!r}")
    if cpu_devices:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices
            )
        except RuntimeError as error:
            raise RuntimeError(
                "--cpu_devices must be applied before TensorFlow initialises its devices: "
                f"{error}"
            ) from error
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        device = devices[0] if devices else ("/gpu:0" if tf.config.list_physical_devices("GPU") else "/cpu:0")
        return tf.distribute.OneDeviceStrategy(device)
    if name == "mirrored":
        if not devices and cpu_devices and not tf.config.list_physical_devices("GPU"):
            devices = [f"/cpu:{i}" for i in range(cpu_devices)]
        return tf.distribute.MirroredStrategy(devices=devices or None)
    if name == "multi_worker":
        # The cluster (workers, this task's index) comes from the TF_CONFIG variable.
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def uses_accelerator(strategy):
    """Whether `strategy` computes on GPUs or TPUs: where --jit_compile=auto turns XLA on and
    a mixed precision runs natively."""
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return True
    try:
        devices = strategy.extended.worker_devices
    except RuntimeError:  # the default strategy: whatever device TensorFlow picks
        return bool(tf.config.list_logical_devices("GPU"))
    return any("GPU" in device.upper() for device in devices)


def uses_jit(jit_compile, strategy):
    """Whether the training step is compiled with XLA: --jit_compile=auto is on for GPUs and TPUs
    only, as on a CPU XLA measured about 0.5x (docs/performance.md)."""
    return jit_compile == "on" or (jit_compile == "auto" and uses_accelerator(strategy))


def cpu_info():
    """(model name, set of instruction flags) of this machine's CPU, from /proc/cpuinfo; None
    for what cannot be read (not Linux)."""
    name, flags = None, None
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = (part.strip() for part in line.partition(":"))
                if key == "model name" and name is None:
                    name = value
                elif key == "flags" and flags is None:
                    flags = set(value.split())
    except OSError:
        pass
    return name, flags


def precision_warning(precision, accelerated, cpu_flags=None):
    """What to tell a user whose mixed precision will be slow on this CPU, else None."""
    if accelerated or precision == "float32":
        return None
    flags = (cpu_info()[1] or set()) if cpu_flags is None else cpu_flags
    if precision == "mixed_float16":
        return ("--mixed_precision=mixed_float16 on a CPU is emulated: measured about 100x "
                "slower than float32 (ResNet-20: 4.5 against 430 images/s). Use float32, or "
                "mixed_bfloat16 on a CPU with AMX or AVX512_BF16; mixed_float16 is for GPUs.")
    if not flags & {"amx_bf16", "avx512_bf16"}:
        return ("--mixed_precision=mixed_bfloat16: this CPU has neither AMX nor AVX512_BF16, "
                "so bfloat16 is emulated and slower than float32; use float32 here.")
    return None
