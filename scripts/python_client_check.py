"""Compatibility check with the official `openai` Python package.

Starts `inferplane sim` on an OS-chosen port, streams a chat completion and makes a
non-streaming legacy completion with the official client, and checks the answers.
Run by .ci/run inside a venv: python scripts/python_client_check.py path/to/inferplane
"""

import re
import subprocess
import sys

from openai import OpenAI


def main() -> int:
    binary = sys.argv[1]
    proc = subprocess.Popen(
        [binary, "sim", "--port", "0", "--model", "py-model", "--profile", "tiny"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        if not match:
            print(f"could not read the simulator's address from {line!r}")
            return 1
        client = OpenAI(base_url=match.group(1) + "/v1", api_key="unused", timeout=30)

        stream = client.chat.completions.create(
            model="py-model",
            messages=[{"role": "user", "content": "hello from python"}],
            max_tokens=9,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, usage, finish = "", None, None
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
        assert len(text.split()) == 9, text
        assert finish == "length", finish
        assert usage is not None and usage.completion_tokens == 9, usage

        done = client.completions.create(model="py-model", prompt="abc", max_tokens=3)
        assert len(done.choices[0].text.split()) == 3, done
        assert [m.id for m in client.models.list().data] == ["py-model"]
        print("python openai client: streaming chat, completions and models OK")
        return 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
