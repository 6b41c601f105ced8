"""Hands stoker's legacy DLPack tensors to a real consumer, torch (1.13 on
Debian 12), through a "dltensor" PyCapsule built with ctypes: torch must see
the values, dtype and shape without copying, and releasing the torch tensor
must run stoker's deleter exactly once. Where torch sees a GPU (and the
library was built with CUDA), a versioned kDLCUDA export ("dltensor_versioned")
must arrive in torch as a CUDA tensor on the same memory.

Usage: /usr/bin/python3 dlpack_torch_test.py LIBRARY
Exits 0 on success, 1 on failure, 77 (skip) when torch is not installed, or when
torch sees no GPU on a machine that has one (the device check was not made)."""
import ctypes
import gc
import shutil
import subprocess
import sys

try:
    import torch
    import torch.utils.dlpack
except ImportError:
    print("torch is not installed for", sys.executable, "- skipping")
    sys.exit(77)

lib = ctypes.CDLL(sys.argv[1])
lib.stoker_test_export.restype = ctypes.c_void_p
lib.stoker_test_export.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_void_p)]
lib.stoker_test_released.restype = ctypes.c_int
capsule_new = ctypes.pythonapi.PyCapsule_New
capsule_new.restype = ctypes.py_object
capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]

cases = [
    (0, torch.float32, [[0.0, 0.5, 1.0], [1.5, 2.0, 2.5]]),
    (1, torch.int64, [-2, -1, 0, 1]),
    (2, torch.bfloat16, [1.0, -2.0, 0.5]),
    (3, torch.uint8, [1, 0, 1]),  # bool travels as uint8 to pre-0.8 consumers
]

def check(label, make_tensor, data, expect):
    """Takes a tensor from make_tensor(), runs expect(tensor) (a list of
    problems), checks that torch shares the memory at `data` and that
    dropping the tensor runs stoker's deleter once. Returns the problems."""
    released = lib.stoker_test_released()
    tensor = make_tensor()
    problems = expect(tensor)
    if tensor.data_ptr() != data.value:
        problems.append("torch copied the data instead of sharing it")
    del tensor
    gc.collect()
    if lib.stoker_test_released() != released + 1:
        problems.append(f"deleter ran {lib.stoker_test_released() - released} times, expected 1")
    for p in problems:
        print(f"{label}: {p}")
    return problems


def expect_legacy(dtype, expected):
    def expect(tensor):
        problems = []
        if tensor.dtype != dtype:
            problems.append(f"dtype {tensor.dtype}, expected {dtype}")
        if tensor.tolist() != expected:
            problems.append(f"values {tensor.tolist()}, expected {expected}")
        return problems
    return expect


failures = 0
for which, dtype, expected in cases:
    data = ctypes.c_void_p()
    pointer = lib.stoker_test_export(which, ctypes.byref(data))
    assert pointer, f"export of tensor {which} failed"
    problems = check(
        f"tensor {which}",
        lambda: torch.utils.dlpack.from_dlpack(capsule_new(pointer, b"dltensor", None)),
        data, expect_legacy(dtype, expected))
    failures += len(problems)
    if not problems:
        print(f"tensor {which}: {dtype} {expected} shared with torch {torch.__version__}, "
              "deleter ran once")


class VersionedExport:
    """What torch.from_dlpack takes: an object with __dlpack__ that returns a
    "dltensor_versioned" capsule (its data is ready: no stream to order)."""

    def __init__(self, pointer):
        self.pointer = pointer

    def __dlpack__(self, stream=None, max_version=None, dl_device=None, copy=None):
        return capsule_new(self.pointer, b"dltensor_versioned", None)

    def __dlpack_device__(self):
        return (2, 0)  # kDLCUDA, GPU 0


lib.stoker_test_export_device.restype = ctypes.c_void_p
lib.stoker_test_export_device.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
if torch.cuda.is_available():
    data = ctypes.c_void_p()
    pointer = lib.stoker_test_export_device(ctypes.byref(data))
    if not pointer:
        print("device tensor: the library could not export one (a build without CUDA?)")
        failures += 1
    else:
        def expect_cuda(tensor):
            problems = []
            if tensor.device.type != "cuda":
                problems.append(f"device {tensor.device}, expected cuda")
            if tensor.tolist() != [[0.0, 0.5, 1.0], [1.5, 2.0, 2.5]]:
                problems.append(f"values {tensor.tolist()}")
            return problems
        problems = check("device tensor", lambda: torch.from_dlpack(VersionedExport(pointer)),
                         data, expect_cuda)
        failures += len(problems)
        if not problems:
            print(f"device tensor: versioned kDLCUDA export shared with torch {torch.__version__} "
                  f"on {torch.cuda.get_device_name(0)}, deleter ran once")
elif shutil.which("nvidia-smi") and subprocess.run(["nvidia-smi", "-L"], capture_output=True,
                                                    check=False).returncode == 0:
    # A GPU machine whose torch cannot use it: the device check, the point of
    # running this there, was not made. Say so in the exit code, not only in print.
    print(f"torch {torch.__version__} sees no GPU on a machine with one: the versioned kDLCUDA "
          "export was NOT checked (install a CUDA build of torch)")
    sys.exit(1 if failures else 77)
else:
    print("no GPU here: the device export is not checked")
sys.exit(1 if failures else 0)
