"""The installed llama.cpp is the portable build: AVX2 code only, so it runs on every CPU of the kind.

A native build on a CPU with AVX-512 or AMX compiles those paths in, and ggml's AMX path crashed the
model server on some machines (a general protection fault in libggml-cpu). infra/llama-wheel.sh
builds the portable wheel; these checks fail when anything else is installed.
"""

import json
import re
import shutil
import subprocess
from importlib.metadata import distribution
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[2]
WHEEL_SCRIPT = ROOT / "infra" / "llama-wheel.sh"


def _script(command: str) -> str:
    return subprocess.run(
        [str(WHEEL_SCRIPT), command], check=True, capture_output=True, text=True
    ).stdout.strip()


def _ggml_cpu_library() -> Path:
    import llama_cpp

    libraries = sorted(Path(llama_cpp.__file__).parent.glob("lib/libggml-cpu*.so"))
    assert libraries, f"no libggml-cpu library next to {llama_cpp.__file__}"
    return libraries[0]


def test_llama_cpp_was_installed_from_the_portable_wheel() -> None:
    dist = distribution("llama_cpp_python")
    direct_url = dist.read_text("direct_url.json")
    assert direct_url, "llama-cpp-python was installed from an index or pip's cache, not infra/llama-wheel.sh"
    wheel = Path(unquote(urlparse(json.loads(direct_url)["url"]).path))
    assert wheel.parent == Path(_script("path")), f"installed from {wheel}, not the portable wheel folder"
    assert (wheel.parent / "flags.txt").read_text().strip() == _script("flags")
    assert "-DGGML_NATIVE=OFF" in _script("flags")


def test_the_cpu_backend_reports_no_avx512_or_amx() -> None:
    import llama_cpp

    features = llama_cpp.llama_print_system_info().decode()
    assert re.search(r"\bAVX2 = 1", features), features
    assert not re.search(r"\b(AVX512\w*|AMX\w*|AVX_VNNI) = 1", features), features


def test_the_cpu_library_holds_no_avx512_or_amx_instructions() -> None:
    if shutil.which("objdump") is None:
        pytest.fail("objdump (binutils) is needed to inspect the llama.cpp build")
    listing = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", str(_ggml_cpu_library())],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "vfmadd" in listing, "the disassembly holds no AVX2/FMA code: the check itself is broken"
    zmm = re.findall(r".*%zmm.*", listing)
    tiles = re.findall(r".*\b(?:ldtilecfg|tileloadd|tdpb\w+|tdpbf16ps)\b.*", listing)
    assert not zmm, f"AVX-512 instructions in the build, e.g. {zmm[:3]}"
    assert not tiles, f"AMX instructions in the build, e.g. {tiles[:3]}"
