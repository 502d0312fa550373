"""Commands of offline work: the training corpus, the evaluation, the load test and the
speed comparison of decoding modes."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from assistant.app.options import logging_options
from assistant.core.config import Settings
from assistant.core.errors import UserError
from assistant.lab.corpus.build import PASTE_SHARE

if TYPE_CHECKING:
    from assistant.agent.decoding import DecodingMode


def cmd_loadtest(args: argparse.Namespace, settings: Settings) -> int:
    from assistant.demo.load import read_demo_keys
    from assistant.demo.shop import build_shop
    from assistant.lab.loadtest.client import LoadOptions, run_with_idle
    from assistant.lab.loadtest.scenario import make_scripts, render

    key = args.key or settings.demo_public_key
    if not key:
        demo = read_demo_keys(settings.data_dir)
        if demo is None:
            raise UserError(
                f"no --key given and no demo keys in {settings.data_dir}: run 'assistant demo "
                "load' (or 'assistant serve') with this data directory, or pass --key pk_..."
            )
        key = demo.public_key
    if args.clients < 0 or args.turns < 1 or args.idle < 0:
        raise UserError("--clients and --idle must be 0 or more and --turns at least 1")
    options = LoadOptions(
        urls=tuple(args.url or [f"ws://127.0.0.1:{settings.port}/ws"]),
        key=key,
        think_s=args.think,
        turn_timeout_s=args.turn_timeout,
        duration_s=args.duration,
    )
    orders = build_shop().orders_in("heldout")
    scripts = make_scripts(args.clients, args.turns, orders, args.tutoring_share, args.seed)
    summary, memory = asyncio.run(run_with_idle(scripts, options, args.idle))
    text = render(summary, args.label)
    mib = {name: f"{value / 2**20:.0f} MiB" if value else "-" for name, value in memory.items()}
    text += (
        f"\n  gateway RSS            {mib['rss_start']} at start, {mib['rss_idle']} with "
        f"{args.idle} idle connections, {mib['rss_after_load']} after the load"
    )
    sys.stdout.write(text + "\n")
    if args.json:
        report = {"label": args.label, **summary.as_dict(), **memory, "idle": args.idle}
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if not summary.violations else 1


def cmd_corpus_build(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from assistant.checkpoints import model_dir
    from assistant.lab.corpus.build import build_corpus, context_fits

    fits = None
    if args.max_tokens:
        fits = context_fits(model_dir(settings.model_path), args.max_tokens, not args.no_slots)
    stats = build_corpus(
        Path(args.out),
        args.train,
        args.heldout,
        args.seed,
        augment=not args.no_augment,
        dev_dialogues=args.dev,
        entity_slots=not args.no_slots,
        paste_share=args.paste_share,
        conversation_counts=(
            args.conversations,
            args.heldout_conversations,
            args.dev_conversations,
        ),
        fits=fits,
    )
    for split, figures in stats.items():
        print(
            f"{split}: {figures['dialogues']} dialogues, {figures['examples']} examples, "
            f"by domain {figures['domains']}"
        )
    print(f"written to {args.out}")
    return 0


def _on_off(value: str | None) -> bool | None:
    """An --x on|off flag: True, False, or None when not given (the served setting)."""
    return None if value is None else value == "on"


def _eval_conversations(
    args: argparse.Namespace,
    path: Path,
    modes: list[str],
    concurrency: int,
    settings: Settings,
    known: Mapping[str, DecodingMode],
) -> int:
    from assistant.checkpoints import uses_entity_slots
    from assistant.lab.conversation_eval import (
        format_conversations,
        run_conversation_evaluation,
        write_conversation_failures,
    )

    reports = asyncio.run(
        run_conversation_evaluation(
            path,
            Path(args.conversations),
            modes,
            args.limit,
            concurrency,
            entity_slots=uses_entity_slots(path, settings.entity_slots),
            known=known,
            redraft=_on_off(args.redraft),
        )
    )
    print(format_conversations(reports))
    if args.dump:
        count = write_conversation_failures(reports, Path(args.dump))
        print(f"{count} conversations not right written to {args.dump}")
    return 0


def _checkpoint_dir(settings: Settings) -> Path:
    """The checkpoint directory --model-path names (default: bundled), or a clear error."""
    from assistant.checkpoints import model_dir

    path = model_dir(settings.model_path)
    if not (path / "config.json").is_file():
        raise UserError(f"no model checkpoint in {path} (set --model-path)")
    return path


def _mode_names(text: str) -> list[str]:
    """Comma-separated decoding mode names, each one served, at least one."""
    from assistant.agent.decoding import decoding_modes

    names = [m.strip() for m in text.split(",") if m.strip()]
    served = decoding_modes()
    unknown = [m for m in names if m not in served]
    if unknown or not names:
        raise UserError(
            f"unknown decoding modes {', '.join(unknown) or '(none given)'}: choose from "
            f"{', '.join(served)}"
        )
    return names


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from assistant.agent.decoding import decoding_modes
    from assistant.checkpoints import uses_entity_slots
    from assistant.lab.evaluation import (
        BAD_INPUT_CASES,
        NATURAL_BAD_INPUT_CASES,
        format_bad_input,
        format_table,
        run_evaluation,
        write_failures,
    )

    heldout = Path(args.heldout)
    if args.conversations and not Path(args.conversations).is_file():
        raise UserError(
            f"no conversations at {args.conversations}: run 'assistant corpus build "
            "--heldout-conversations N' first"
        )
    if not args.natural and not args.conversations and not heldout.is_file():
        raise UserError(
            f"no held-out dialogues at {heldout}: run 'assistant corpus build' first "
            "(or pass --heldout)"
        )
    path = _checkpoint_dir(settings)
    modes = _mode_names(args.modes)
    try:
        levels = [int(x) for x in args.concurrency.split(",")]
    except ValueError:
        raise UserError("--concurrency takes numbers separated by commas, e.g. 1,8") from None
    # Sweeps of the fast modes' settings; unset ones keep the served values.
    sweep = {
        name: value
        for name, value in (
            ("threshold", args.fast_threshold),
            ("revise_below", args.revise_below),
            ("block_size", args.fast_block),
            ("verify_floor", args.verify_floor),
            ("verify_threshold", args.fast_threshold),
            ("verify_block", args.fast_block),
            ("serial_repeats", _on_off(args.serial_repeats)),
        )
        if value is not None
    }
    if args.conversations:
        return _eval_conversations(args, path, modes, levels[0], settings, decoding_modes(**sweep))
    reports, bad_reports = asyncio.run(
        run_evaluation(
            path,
            heldout,
            modes,
            args.limit,
            levels,
            args.speed_limit,
            entity_slots=uses_entity_slots(path, settings.entity_slots),
            bad_input=args.bad_input,
            known=decoding_modes(**sweep),
            natural=args.natural,
            redraft=_on_off(args.redraft),
        )
    )
    print(format_table(reports))
    if bad_reports:
        print()
        cases = NATURAL_BAD_INPUT_CASES if args.natural else BAD_INPUT_CASES
        print(format_bad_input(bad_reports, cases))
    if args.dump:
        # The bad-input runs' failed turns too (their intent names the case).
        first = [r for r in reports if r.concurrency == levels[0]] + list(bad_reports)
        count = write_failures(first, Path(args.dump))
        print(f"{count} failed turns written to {args.dump}")
    return 0


def cmd_corpus_distill(args: argparse.Namespace, settings: Settings) -> int:
    import torch

    from assistant.lab.corpus.distill import distill_file
    from dlm_runtime.loading import load_model
    from dlm_runtime.tokenizer import load_tokenizer

    source, out = Path(args.source), Path(args.out)
    if not source.is_file():
        raise UserError(f"no training file at {source}: run 'assistant corpus build' first")
    if out.resolve() == source.resolve():
        raise UserError("--out must not be the source file (it is read while written)")
    if args.text < 1 or args.concurrency < 1:
        raise UserError("--text and --concurrency must be at least 1")
    if args.tool is not None and args.tool < 0:
        raise UserError("--tool must be 0 or more")
    path = _checkpoint_dir(settings)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(path, dtype="float32")
    tok = load_tokenizer(path)
    context = int(getattr(model.config, "max_position_embeddings", 512))
    try:
        stats = distill_file(
            model,
            tok,
            source,
            out,
            text=args.text,
            tool=args.tool,
            seed=args.seed,
            concurrency=args.concurrency,
            max_context=context,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    print(
        f"wrote {out}: {stats.tool_examples} tool-call examples as written, "
        f"{stats.text_examples} text examples, {stats.distilled} of them with the model's "
        f"reply ({stats.same_as_written} the same as written)"
    )
    return 0


def cmd_speed(args: argparse.Namespace, settings: Settings) -> int:
    import torch

    from assistant.agent.decoding import decoding_modes
    from assistant.lab.speed import chat_prompts, speed_report
    from dlm_runtime.bench import cpu_name, load_average
    from dlm_runtime.loading import load_model
    from dlm_runtime.tokenizer import load_tokenizer

    prompts_path = Path(args.prompts)
    if not prompts_path.is_file():
        raise UserError(
            f"no prompts at {prompts_path}: run 'assistant corpus build' first (or pass --prompts)"
        )
    path = _checkpoint_dir(settings)
    names = _mode_names(args.modes)
    served = decoding_modes()
    try:
        loads = [int(x) for x in args.loads.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--loads must be comma-separated integers, got {args.loads!r}") from None
    if not loads or min(loads) < 1:
        raise UserError("--loads needs at least one load of 1 or more")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(path, dtype="float32")
    tok = load_tokenizer(path)
    modes = [served[name] for name in names]
    room = max(mode.policy.max_new_tokens for mode in modes)
    context = getattr(model.config, "max_position_embeddings", None)
    prompts = chat_prompts(tok, prompts_path, args.count, room, context)
    print("command:  assistant speed " + " ".join(sys.argv[2:]))
    print(
        f"hardware: {cpu_name()}, {torch.get_num_threads()} torch threads, torch "
        f"{torch.__version__}, load average {load_average()}"
    )
    print(
        f"model:    {path} (float32), {len(prompts)} prompts from {prompts_path}, replies up "
        f"to {room} tokens, temperature 0, best of {args.repeats}"
    )
    for line in speed_report(model, tok, modes, prompts, loads, args.repeats):
        print(line)
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add corpus, eval and loadtest to the command line."""
    corpus = commands.add_parser(
        "corpus",
        help="training and evaluation data",
        description="Generated conversations for the bundled model.",
    )
    corpus_commands = corpus.add_subparsers(dest="corpus_command", metavar="ACTION", required=True)
    build = corpus_commands.add_parser(
        "build",
        parents=[logging_options()],
        help="generate the corpus files",
        description="Write train.jsonl, heldout.jsonl, heldout_dialogues.jsonl and "
        "added_words.json. Held-out templates and entity values never occur in training.",
    )
    build.add_argument(
        "--out", default="data/corpus", help="output directory (default data/corpus)"
    )
    build.add_argument(
        "--train", type=int, default=20000, help="training dialogues (default 20000)"
    )
    build.add_argument(
        "--heldout", type=int, default=1500, help="held-out dialogues (default 1500)"
    )
    build.add_argument("--seed", type=int, default=11, help="random seed (default 11)")
    build.add_argument(
        "--no-augment",
        action="store_true",
        help="leave training user turns as generated (no casing, punctuation, typo or "
        "filler noise); held-out turns are never augmented",
    )
    build.add_argument(
        "--dev",
        type=int,
        default=0,
        help="also write N dev dialogues to dev_dialogues.jsonl (dev phrasings, which "
        "training never uses, with training entities; another seed), for tuning decoding "
        "settings and choosing a checkpoint (default 0)",
    )
    build.add_argument(
        "--no-slots",
        action="store_true",
        help="write entities as their real values, not placeholders: the corpus of a model "
        'that copies them itself (train it with "entity_slots": false)',
    )
    build.add_argument(
        "--paste-share",
        type=float,
        default=PASTE_SHARE,
        metavar="P",
        help="share of training dialogues whose first message is buried in a long paste, "
        f"cut as serving cuts it (default {PASTE_SHARE}; 0 = none, the corpus before)",
    )
    build.add_argument(
        "--conversations",
        type=int,
        default=0,
        metavar="N",
        help="also add N whole multi-turn conversations from the user simulator to the "
        "training file (default 0)",
    )
    build.add_argument(
        "--heldout-conversations",
        type=int,
        default=0,
        metavar="N",
        help="write N held-out simulated conversations to heldout_conversations.jsonl, for "
        "'assistant eval --conversations' (default 0)",
    )
    build.add_argument(
        "--dev-conversations",
        type=int,
        default=0,
        metavar="N",
        help="write N dev conversations (dev phrasings, training entities, another seed) "
        "to dev_conversations.jsonl, for choosing a checkpoint (default 0)",
    )
    build.add_argument(
        "--max-tokens",
        type=int,
        default=480,
        metavar="N",
        help="cut each training conversation to N tokens as serving cuts it (oldest whole "
        "exchanges first), counted with the tokenizer of --model-path; 0 = no cut "
        "(default 480, the bundled model's training length)",
    )
    build.add_argument("--model-path", metavar="DIR", help="tokenizer (default: bundled)")
    build.set_defaults(handler=cmd_corpus_build)

    distill = corpus_commands.add_parser(
        "distill",
        parents=[logging_options()],
        help="replace sampled text replies by the model's own causal ones",
        description="Self-distillation for parallel decoding: write the training file's "
        "tool-call examples (all, or --tool of them) and N sampled text examples whose "
        "replies are the model's greedy autoregressive ones where those finish, write no "
        "word twice in a row, keep every placeholder of the written reply, name none the "
        "conversation lacks and, in tutoring, give its verdict (else the written reply "
        "stays). Train on the result so that block "
        "diffusion learns one wording per prompt and commits more positions per forward.",
    )
    distill.add_argument("--source", required=True, metavar="FILE", help="a train.jsonl")
    distill.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    distill.add_argument(
        "--text", type=int, required=True, metavar="N", help="text examples to sample"
    )
    distill.add_argument(
        "--tool",
        type=int,
        metavar="N",
        help="tool-call examples to sample (default: all of them); keep the source's share "
        "of tool calls so that training on the file does not tilt the model towards them",
    )
    distill.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    distill.add_argument(
        "--concurrency", type=int, default=16, help="replies decoded together (default 16)"
    )
    distill.add_argument(
        "--threads", type=int, default=0, help="torch threads (default: torch's choice)"
    )
    distill.add_argument("--model-path", metavar="DIR", help="the model (default: bundled)")
    distill.set_defaults(handler=cmd_corpus_distill)

    evaluate = commands.add_parser(
        "eval",
        parents=[logging_options()],
        help="score a model on the held-out dialogues in every decoding mode",
        description="Replay held-out user turns through the agent loop (tools on the "
        "in-memory demo store) and print, per decoding mode side by side: tool selection, "
        "argument exact match, fact accuracy, tutoring verdicts, tokens/s, forward passes "
        "per token and latency percentiles.",
    )
    evaluate.add_argument("--model-path", metavar="DIR", help="checkpoint (default: bundled)")
    evaluate.add_argument(
        "--heldout",
        default="data/corpus/heldout_dialogues.jsonl",
        help="held-out dialogues (default data/corpus/heldout_dialogues.jsonl)",
    )
    evaluate.add_argument(
        "--modes",
        default="autoregressive,vanilla-diffusion,fast-diffusion,fast-diffusion+revision",
        help="comma-separated decoding modes (also: speculative)",
    )
    evaluate.add_argument("--limit", type=int, default=300, help="held-out turns (default 300)")
    evaluate.add_argument(
        "--concurrency",
        default="1,8",
        help="concurrency levels; accuracy uses the first (default 1,8)",
    )
    evaluate.add_argument(
        "--speed-limit",
        type=int,
        default=64,
        help="turns for the other concurrency levels (default 64)",
    )
    evaluate.add_argument(
        "--dump",
        metavar="FILE",
        help="write each failed turn (first concurrency level, and bad-input turns) as JSON "
        "lines to FILE",
    )
    evaluate.add_argument(
        "--fast-threshold",
        type=float,
        metavar="P",
        help="fast diffusion (and verified fast diffusion) commits positions at this "
        "probability (default: the served ones)",
    )
    evaluate.add_argument(
        "--fast-block",
        type=int,
        metavar="N",
        help="fast diffusion's (and verified fast diffusion's) block length in positions "
        "(default: the served ones)",
    )
    evaluate.add_argument(
        "--redraft",
        choices=("on", "off"),
        help="redraft a parallel mode's unusable output (malformed tool call, unknown "
        "placeholder) once in the autoregressive mode (default: the served setting)",
    )
    evaluate.add_argument(
        "--serial-repeats",
        choices=("on", "off"),
        help="in the fast modes, of two neighbours committed in one step with the same token "
        "the less confident waits a step (default: the served setting)",
    )
    evaluate.add_argument(
        "--revise-below",
        type=float,
        metavar="P",
        help="self-revision re-masks committed tokens whose probability fell below this "
        "(default: the served one)",
    )
    evaluate.add_argument(
        "--verify-floor",
        type=float,
        metavar="P",
        help="fast-diffusion+verify keeps a block token while the causal mode ranks it first "
        "or gives it at least this probability (1: argmax only; default: the served one)",
    )
    evaluate.add_argument(
        "--bad-input",
        type=int,
        default=20,
        metavar="N",
        help="also score N held-out turns of each bad-input case (prompt injection, unsafe, "
        "out of scope, not English, unknown or another customer's order, a question in a "
        "4,000-character message) per mode; 0 = off (default 20)",
    )
    evaluate.add_argument(
        "--natural",
        action="store_true",
        help="score every turn of the natural-phrasing set written by hand "
        "(assistant/lab/natural.py) instead of --heldout; its bad-input table comes from the "
        "same runs (--limit and --bad-input do not apply)",
    )
    evaluate.add_argument(
        "--conversations",
        metavar="FILE",
        nargs="?",
        const="data/corpus/heldout_conversations.jsonl",
        help="score whole simulated conversations instead (default FILE "
        "data/corpus/heldout_conversations.jsonl): the customer's messages replayed on the "
        "model's own earlier turns, each turn and each conversation scored; --limit counts "
        "conversations, the first --concurrency level is used",
    )
    evaluate.add_argument(
        "--entity-slots",
        choices=("auto", "on", "off"),
        help="entities as placeholders: auto follows the checkpoint's config.json "
        "(default; $ASSISTANT_ENTITY_SLOTS)",
    )
    evaluate.set_defaults(handler=cmd_eval)

    loadtest = commands.add_parser(
        "loadtest",
        parents=[logging_options()],
        help="simulated clients holding scripted conversations against running gateways",
        description="Open N WebSocket clients on loopback gateways; each holds a scripted "
        "support or tutoring conversation (next message THINK seconds after each reply) "
        "and checks that every message and reply arrives exactly once. Prints time to "
        "first draft and to final (p50/p95/p99), turns/s, errors by code and, with --idle, "
        "the first gateway's memory while it holds that many silent connections.",
    )
    loadtest.add_argument(
        "--url",
        action="append",
        metavar="WS_URL",
        help="gateway WebSocket URL, repeatable (default ws://127.0.0.1:8765/ws)",
    )
    loadtest.add_argument(
        "--key", help="public key (default: the demo tenant's, from <data dir>/demo-keys.json)"
    )
    loadtest.add_argument("--data-dir", help="where demo-keys.json lives (default data)")
    loadtest.add_argument("--clients", type=int, default=50, help="conversations (default 50)")
    loadtest.add_argument("--turns", type=int, default=3, help="user turns each (default 3)")
    loadtest.add_argument(
        "--think", type=float, default=2.0, help="seconds between a reply and the next message"
    )
    loadtest.add_argument(
        "--tutoring-share", type=float, default=0.3, help="share of tutoring clients (0.3)"
    )
    loadtest.add_argument(
        "--duration", type=float, default=600, help="hard stop in seconds (default 600)"
    )
    loadtest.add_argument(
        "--turn-timeout", type=float, default=60, help="seconds before a turn counts as hanging"
    )
    loadtest.add_argument(
        "--idle", type=int, default=0, help="extra silent connections held open (default 0)"
    )
    loadtest.add_argument("--seed", type=int, default=1, help="script seed (default 1)")
    loadtest.add_argument("--label", default="", help="a name for this run in the report")
    loadtest.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    loadtest.set_defaults(handler=cmd_loadtest)

    speed = commands.add_parser(
        "speed",
        parents=[logging_options()],
        help="tokens/s of the decoding modes side by side at several loads",
        description="Run the same held-out prompts through the engine in each decoding mode "
        "at each load (that many requests in flight), modes taking turns, best of "
        "--repeats; print tokens/s, forward passes per token, the ratio to the first mode "
        "and how many replies equal its replies. Only ratios from one run compare.",
    )
    speed.add_argument("--model-path", metavar="DIR", help="checkpoint (default: bundled)")
    speed.add_argument(
        "--prompts",
        default="data/corpus/heldout.jsonl",
        help="a corpus file whose lines hold 'messages' (default data/corpus/heldout.jsonl)",
    )
    speed.add_argument(
        "--modes",
        default="autoregressive,fast-diffusion,adaptive-diffusion,speculative",
        help="comma-separated decoding modes, the first is the reference "
        "(default autoregressive,fast-diffusion,adaptive-diffusion,speculative)",
    )
    speed.add_argument(
        "--loads", default="1,4,8,16,32", help="requests in flight (default 1,4,8,16,32)"
    )
    speed.add_argument("--count", type=int, default=32, help="prompts (default 32)")
    speed.add_argument("--repeats", type=int, default=2, help="best of N runs (default 2)")
    speed.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    speed.set_defaults(handler=cmd_speed)
