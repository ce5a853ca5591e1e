"""plan.py: a line's seeds, -n, -v/-V, the -I -v -n feedback loop, hires passes and the -S -N /
-I -1 lookups, checked on values alone: no model, no files, no torch."""

from __future__ import annotations

import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from invoke import plan
from invoke.backend.job import Noise, hires_first_pass
from invoke.errors import InvokeError
from invoke.line.parse import parse_request
from invoke.line.switches import Variation


def line(text: str, seed: int | None = None):
    request = parse_request(text)
    return request if seed is None else replace(request, seed=seed)


def seeds_of(passes: tuple[plan.Pass, ...]) -> list[int]:
    return [r.seed for p in passes for r in p.requests]


# -- seeds ------------------------------------------------------------------------------------


def test_the_first_picture_of_a_line_has_the_line_s_seed() -> None:
    assert plan.derive_seed(42, 0) == 42


def test_later_seeds_are_a_fixed_function_of_the_base_seed_and_the_index() -> None:
    # Written out here, not taken from plan.py: the rule docs/switches.md states (the same -S
    # and -n make the same pictures), with its formula pinned.
    expected = [random.Random(42 * 1_000_003 + k).randrange(2**32) for k in (1, 2)]
    assert [plan.derive_seed(42, k) for k in (1, 2)] == expected


def test_n_pictures_of_different_seeds_share_no_seed() -> None:
    # A mutation that ignored -S for pictures 2..n made `-S 7 -n 3` and `-S 42 -n 3` share them.
    seven = seeds_of(plan.plan(line("a cat -n 3", 7), None))
    forty_two = seeds_of(plan.plan(line("a cat -n 3", 42), None))
    assert seven[0] == 7 and forty_two[0] == 42
    assert not set(seven) & set(forty_two)
    assert len(set(seven)) == 3


def test_base_seed_takes_the_line_s_seed_or_the_fresh_one() -> None:
    assert plan.base_seed(line("a cat -S 5"), [1, 2], fresh=99) == 5
    assert plan.base_seed(line("a cat"), [1, 2], fresh=99) == 99


def test_minus_s_minus_n_is_the_seed_of_the_picture_n_back() -> None:
    made = [10, 20, 30]
    assert plan.base_seed(line("a cat -S -1"), made, fresh=0) == 30
    assert plan.base_seed(line("a cat -S -3"), made, fresh=0) == 10


def test_minus_s_further_back_than_the_session_made_says_how_many_there_are() -> None:
    with pytest.raises(InvokeError, match=r"-S/--seed: -3 .* this session has made 2; give a seed"):
        plan.base_seed(line("a cat -S -3"), [1, 2], fresh=0)


def test_minus_i_minus_one_is_the_last_file_and_an_error_before_any() -> None:
    assert plan.previous_file("-I/--init_img", [Path("a.png"), Path("b.png")]) == Path("b.png")
    with pytest.raises(InvokeError, match="-I/--init_img: -1 means the previous output"):
        plan.previous_file("-I/--init_img", [])


# -- -n and batches ---------------------------------------------------------------------------


def test_n_makes_one_pass_a_picture_off_cuda_and_batches_of_eight_on_it() -> None:
    request = line("a cat -n 10", 3)
    assert [len(p.noises) for p in plan.plan(request, None, plan.batch_size("cpu"))] == [1] * 10
    assert [len(p.noises) for p in plan.plan(request, None, plan.batch_size("cuda"))] == [8, 2]
    assert seeds_of(plan.plan(request, None, 8)) == seeds_of(plan.plan(request, None, 1))


def test_each_picture_s_request_remakes_it_alone() -> None:
    passes = plan.plan(line("a cat -n 3 -g -o elsewhere -t", 3), None)
    for k, p in enumerate(passes):
        [request] = p.requests
        assert request.seed == plan.derive_seed(3, k)
        assert request.iterations is None and not request.grid and request.outdir is None
        assert not request.log_tokenization
        # the picture's own command, read back, plans to the same single picture
        again = plan.plan(parse_request(request.to_command()), None)
        assert [q.noises for q in again] == [p.noises]


# -- variations -------------------------------------------------------------------------------


def test_v_slerps_every_picture_from_the_base_seed_toward_its_own() -> None:
    passes = plan.plan(line("a cat -n 3 -v 0.2", 5), None)
    assert [p.noises for p in passes] == [
        (Noise(5, ((plan.derive_seed(5, k + 1), 0.2),)),) for k in range(3)
    ]
    for k, p in enumerate(passes):
        [request] = p.requests
        assert request.seed == 5
        assert request.with_variations == (Variation(plan.derive_seed(5, k + 1), 0.2),)
        assert request.variation_amount is None


def test_a_v_chain_goes_before_the_new_variation() -> None:
    [only] = plan.plan(line("a cat -V 11:0.1,12:0.2 -v 0.3", 5), None)
    assert only.noises == (Noise(5, ((11, 0.1), (12, 0.2), (plan.derive_seed(5, 1), 0.3))),)


def test_without_v_the_chain_is_the_first_picture_s_only() -> None:
    passes = plan.plan(line("a cat -V 11:0.1 -n 2", 5), None)
    assert [p.noises for p in passes] == [
        (Noise(5, ((11, 0.1),)),),
        (Noise(plan.derive_seed(5, 1), ()),),
    ]


# -- the -I -v -n feedback loop ---------------------------------------------------------------


def test_the_feedback_loop_starts_each_pass_from_the_one_before() -> None:
    init = Path("sketch.png")
    passes = plan.plan(line("a cat -I sketch.png -v 0.3 -n 3", 8), init, batch=8)
    assert [p.init for p in passes] == [init, plan.FromPass(0), plan.FromPass(1)]
    assert [len(p.noises) for p in passes] == [1, 1, 1]  # one after another, never batched
    assert passes[0].requests[0].init_img == "sketch.png"
    made = passes[1].with_init(Path("out/000001.8.png"))
    assert made.init == Path("out/000001.8.png")
    assert made.requests[0].init_img == "out/000001.8.png"
    assert [p.noises[0] for p in passes] == [
        Noise(8, ((plan.derive_seed(8, k + 1), 0.3),)) for k in range(3)
    ]


def test_img2img_without_v_uses_the_same_init_for_every_picture() -> None:
    init = Path("sketch.png")
    passes = plan.plan(line("a cat -I sketch.png -n 2", 8), init)
    assert [p.init for p in passes] == [init, init]
    assert [p.requests[0].init_img for p in passes] == ["sketch.png", "sketch.png"]


# -- --hires_fix ------------------------------------------------------------------------------


def test_hires_first_pass_only_with_hires_fix_and_no_init_image() -> None:
    big = line("a cat -W 192 -H 128 -s 20 --hires_fix")
    assert plan.first_pass(big, (64, 64), 4) == hires_first_pass(192, 128, (64, 64), 4)
    assert plan.first_pass(replace(big, hires_fix=False), (64, 64), 4) is None
    assert plan.first_pass(replace(big, init_img="x.png"), (64, 64), 4) is None


def test_hires_note_says_both_passes_or_why_there_is_one() -> None:
    big = line("a cat -W 192 -H 128 -s 20 --hires_fix")
    first = hires_first_pass(192, 128, (64, 64), 4)
    assert first is not None
    assert plan.hires_note(big, (64, 64), 4) == (
        f"hires_fix: {first[0]}x{first[1]} first, then its latents upscaled to 192x128 and "
        f"redrawn at strength 0.75 (15 of 20 steps)"
    )
    small = line("a cat -W 64 -H 64 -s 20 --hires_fix")
    assert plan.hires_note(small, (64, 64), 4) == (
        "hires_fix: 64x64 is not larger than the model's native 64x64; one pass, as without "
        "--hires_fix"
    )


def test_the_plan_needs_no_torch() -> None:
    code = "import sys, invoke.plan; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
