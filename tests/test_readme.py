"""Every shell command the README shows names a command, subcommand, flag or file that exists.

The README's fenced bash/sh/shell/console blocks are split into commands (continuations joined, `&&`, `;` and
`|` split, comments and prompts dropped). Nothing is executed beyond `--help`:
- `vidssl <cmd> ...` and `python -m vidssl.cli <cmd> ...` (also after `torchrun`): the command exists in the
  typer app, every flag is one of its options, and the positional arguments fit its declared arguments;
- `dvc <sub...> [flags]`, `prefect <sub...> [flags]`, `python <script> [flags]`: the subcommand's or script's
  `--help` lists every flag; a script file must exist;
- `bash <script>`: the file exists.
Other programs fail the check, so a new kind of command in the README comes with a checker here.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest
import typer

ROOT = Path(__file__).resolve().parents[1]
SHELL_LANGS = {"bash", "sh", "shell", "console"}
# Programs whose lines are shell plumbing or need the network; their existence is not checked.
IGNORED = {"cd", "export", "source", ".", "echo", "cat", "head", "tail", "ls", "pip", "curl", "wget", "git", "nvidia-smi", "sudo"}


def shell_blocks(markdown: str) -> list[str]:
    """The bodies of the fenced code blocks whose language is a shell."""
    blocks, body, lang = [], [], None
    for line in markdown.splitlines():
        fence = re.match(r"^\s*(```+|~~~+)\s*([\w-]*)", line)
        if fence and lang is None:
            lang, body = fence.group(2).lower() or "text", []
        elif fence:
            if lang in SHELL_LANGS:
                blocks.append("\n".join(body))
            lang = None
        elif lang is not None:
            body.append(line)
    return blocks


def commands(block: str) -> list[list[str]]:
    """Tokenised commands of a shell block: continuations joined, comments and prompts dropped, chains split."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        line = re.sub(r"^\s*\$\s+", "", line)
        try:
            lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;")
            lexer.whitespace_split = True
            lexer.commenters = "#"
            tokens = list(lexer)
        except ValueError as exc:
            raise AssertionError(f"README line does not parse as shell: {line!r} ({exc})") from exc
        current: list[str] = []
        for tok in tokens + [";"]:
            if tok and set(tok) <= set("|&;"):
                if current:
                    out.append(current)
                current = []
            else:
                current.append(tok)
    return out


def _strip_env(cmd: list[str]) -> list[str]:
    """Drop leading VAR=value assignments."""
    i = 0
    while i < len(cmd) and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", cmd[i]):
        i += 1
    return cmd[i:]


def _flags(tokens: list[str]) -> list[str]:
    return [t.split("=", 1)[0] for t in tokens if t.startswith("-") and t not in {"-", "--"}]


@lru_cache(maxsize=None)
def _help(argv: tuple[str, ...]) -> tuple[int, str]:
    proc = subprocess.run([*argv, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


def _check_help_flags(argv: list[str], flags: list[str], what: str) -> list[str]:
    code, text = _help(tuple(argv))
    if code != 0:
        return [f"{what}: `{' '.join(argv)} --help` failed (exit {code}): {text.strip()[-200:]}"]
    return [f"{what}: flag {f} is not in `{' '.join(argv)} --help`" for f in flags
            if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text)]


def check_vidssl(args: list[str], what: str) -> list[str]:
    """`vidssl <cmd> [args]`: the command, its flags and its positional arguments exist."""
    from vidssl.cli import app

    group = typer.main.get_command(app)
    if not args:
        return []
    name, rest = args[0], args[1:]
    if name.startswith("-"):
        return [] if name in {"--help"} else [f"{what}: vidssl has no top-level option {name}"]
    known = getattr(group, "commands", {})  # typer vendors click, so its classes are duck-typed here
    cmd = known.get(name)
    if cmd is None:
        return [f"{what}: vidssl has no command {name!r} (commands: {', '.join(sorted(known))})"]
    params = [p for p in cmd.params if p.param_type_name == "option"]
    options = {o: p for p in params for o in [*p.opts, *p.secondary_opts]}
    options["--help"] = None
    arguments = [p for p in cmd.params if p.param_type_name == "argument"]
    errors, positional, i = [], [], 0
    while i < len(rest):
        tok = rest[i]
        if tok.startswith("-") and tok != "-":
            key = tok.split("=", 1)[0]
            opt = options.get(key, False)
            if opt is False:
                errors.append(f"{what}: `vidssl {name}` has no option {key}")
            elif opt is not None and not opt.is_flag and "=" not in tok and key not in opt.secondary_opts:
                i += 1  # the option's value
        else:
            positional.append(tok)
        i += 1
    if len(positional) > len(arguments):
        errors.append(f"{what}: `vidssl {name}` takes {len(arguments)} argument(s), the README gives "
                      f"{len(positional)}: {positional}")
    required = [a for a in arguments if a.required]
    if "--help" not in rest and len(positional) < len(required):
        errors.append(f"{what}: `vidssl {name}` needs {[a.name for a in required]}, the README gives {positional}")
    return errors


def check_command(cmd: list[str], what: str) -> list[str]:
    """Errors for one tokenised README command (empty when everything it names exists)."""
    cmd = _strip_env(cmd)
    if not cmd or cmd[0] in IGNORED:
        return []
    prog, args = cmd[0], cmd[1:]
    if prog == "vidssl":
        return check_vidssl(args, what)
    if prog in {"python", "python3"}:
        if args[:2] == ["-m", "vidssl.cli"]:
            return check_vidssl(args[2:], what)
        if not args or args[0].startswith("-"):
            return [f"{what}: unchecked python invocation {' '.join(cmd)}"]
        script = ROOT / args[0]
        if not script.is_file():
            return [f"{what}: {args[0]} does not exist"]
        flags = _flags(args[1:])
        return _check_help_flags([sys.executable, str(script)], flags, what) if flags else []
    if prog == "torchrun":  # needs the GPUs it names; check the vidssl command it would launch
        if "-m" in args and args[args.index("-m") + 1:args.index("-m") + 2] == ["vidssl.cli"]:
            return check_vidssl(args[args.index("-m") + 2:], what)
        scripts = [a for a in args if a.endswith(".py")]
        return [f"{what}: {s} does not exist" for s in scripts if not (ROOT / s).is_file()]
    if prog == "bash":
        scripts = [a for a in args if not a.startswith("-")][:1]
        return [f"{what}: {s} does not exist" for s in scripts if not (ROOT / s).is_file()]
    if prog in {"dvc", "prefect"}:
        sub = []
        for tok in args:
            if tok.startswith("-") or "=" in tok or "/" in tok or "." in tok:
                break
            sub.append(tok)
        exe = Path(sys.executable).with_name(prog)
        return _check_help_flags([str(exe if exe.exists() else prog), *sub], _flags(args[len(sub):]), what)
    return [f"{what}: no checker for program {prog!r} (add one in tests/test_readme.py)"]


def check_markdown(markdown: str) -> list[str]:
    """Every error over all shell commands of a markdown text."""
    errors = []
    for block in shell_blocks(markdown):
        for cmd in commands(block):
            errors += check_command(cmd, " ".join(cmd))
    return errors


def test_readme_commands_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    found = [c for b in shell_blocks(readme) for c in commands(b)]
    assert any(_strip_env(c)[:1] == ["vidssl"] for c in found), "the README shows no vidssl command"
    assert check_markdown(readme) == []


FAKE = """
Intro.

```bash
vidssl no-such-command
vidssl pretrain --no-such-flag 3       # a comment
vidssl synth                           # its OUT argument is missing
vidssl lists a b c d
python bench/no_such_bench.py
bash scripts/no_such.sh && vidssl methods
torchrun --nproc-per-node 2 -m vidssl.cli pretrian
mystery-tool --go
```

```python
vidssl not-checked-in-a-python-block
```
"""


def test_checker_fails_on_what_does_not_exist() -> None:
    errors = check_markdown(FAKE)
    expected = ["no command 'no-such-command'", "has no option --no-such-flag", "needs ['out']",
                "takes 3 argument(s)", "bench/no_such_bench.py does not exist", "scripts/no_such.sh does not exist",
                "no command 'pretrian'", "no checker for program 'mystery-tool'"]
    for part in expected:
        assert sum(part in e for e in errors) == 1, (part, errors)
    assert len(errors) == len(expected), errors
    assert not any("not-checked" in e for e in errors)


def test_checker_passes_what_exists() -> None:
    good = """```console
$ vidssl pretrain -p params.yaml --state models/pretrain_state
$ vidssl synth data/raw --appearances 1 --scale=2 \\
    --seed 3
$ vidssl pipeline --no-force --stages pretrain,finetune
$ python -m vidssl.cli methods-report --seeds 632 --methods iic,cmc
$ bash scripts/demo.sh
```"""
    assert check_markdown(good) == []


def test_shell_splitting() -> None:
    block = "A=1 vidssl methods && vidssl backbones | head -3  # list\n$ vidssl ui --port 5001; echo done"
    assert commands(block) == [["A=1", "vidssl", "methods"], ["vidssl", "backbones"], ["head", "-3"],
                               ["vidssl", "ui", "--port", "5001"], ["echo", "done"]]


@pytest.mark.slow  # the docs name many prefect/dvc subcommands, each a `--help` in a fresh interpreter
@pytest.mark.parametrize("doc", sorted(p.name for p in (ROOT / "docs").glob("*.md")))
def test_docs_commands_exist(doc: str) -> None:
    assert check_markdown((ROOT / "docs" / doc).read_text()) == []
