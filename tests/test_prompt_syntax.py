"""The prompt syntax: what each spelling means, what stays plain text, and the Prompt value."""

from __future__ import annotations

import pickle
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from invoke.errors import ParseError
from invoke.line.parse import parse_line
from invoke.line.prompt import (
    Fragment,
    LoraUse,
    Parts,
    Prompt,
    SubPrompt,
    is_weighted,
    plain_text,
    split_triggers,
)
from invoke.line.prompt_syntax import (
    PromptParts,
    embedding_names,
    parse_prompt,
    parse_weighting,
    split_loras,
    split_prompt,
)
from tests.hypothesis_budget import examples

F = Fragment


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a red circle", (F("a red circle"),)),
        ("a ball+ here", (F("a "), F("ball", 1.1), F(" here"))),
        ("a ball++, in the forest", (F("a "), F("ball", 1.21), F(", in the forest"))),
        ("a ball--", (F("a "), F("ball", 0.81))),
        ("a (red ball)1.3 here", (F("a "), F("red ball", 1.3), F(" here"))),
        ("(red ball)- here", (F("red ball", 0.9), F(" here"))),
        ("(a (red)++ ball)1.2", (F("a ", 1.2), F("red", 1.452), F(" ball", 1.2))),
        ("(red)0 circle", (F("red", 0.0), F(" circle"))),
        # AUTOMATIC1111's spelling of the same; times and ratios stay text
        ("a (red ball:1.3) here", (F("a "), F("red ball", 1.3), F(" here"))),
        # nested, the inner A1111 weight multiplies the outer one: 1.2 x 1.5
        ("(a (red:1.5) ball)1.2", (F("a ", 1.2), F("red", 1.8), F(" ball", 1.2))),
        ("(masterpiece: 1.2), best", (F("masterpiece", 1.2), F(", best"))),
        ("at (12:30), (16:9) (eta:42)", (F("at (12:30), (16:9) (eta:42)"),)),
        # parentheses without a weight are text; what is inside may still be weighted
        ("portrait (oil painting) style", (F("portrait (oil painting) style"),)),
        ("(1990)s fashion", (F("(1990)s fashion"),)),
        ("((a ball+))", (F("((a "), F("ball", 1.1), F("))"))),
        # what is not syntax stays text: escapes, inner hyphens, unmatched parentheses
        ("a \\(literal\\) word\\+", (F("a (literal) word+"),)),
        ("an x-ray, well-lit", (F("an x-ray, well-lit"),)),
        ("smile :) (oops", (F("smile :) (oops"),)),
        ("a -- b", (F("a -- b"),)),
        ("(red) 1.3", (F("(red) 1.3"),)),
    ],
)
def test_weighted_fragments(text: str, expected: tuple[Fragment, ...]) -> None:
    assert parse_weighting(text) == expected


def test_blend_and_conjunction() -> None:
    blend = parse_weighting('("a red circle", "a (blue)+ square").blend(0.25, 0.75)')
    assert blend == Parts(
        "blend",
        (((F("a red circle"),), 0.25), ((F("a "), F("blue", 1.1), F(" square")), 0.75)),
    )
    both = parse_weighting('("a cat", "playing with a \\"ball\\"").and()')
    assert both == Parts("and", (((F("a cat"),), 1.0), ((F('playing with a "ball"'),), 1.0)))
    assert parse_weighting('("a", "b").and(1, 0.5)') == Parts(
        "and", (((F("a"),), 1.0), ((F("b"),), 0.5))
    )
    assert plain_text(both) == 'a cat, playing with a "ball"'
    # Not a list of quoted prompts: plain words that happen to look alike.
    assert parse_weighting("(a cat).blend(1)") == (F("(a cat).blend(1)"),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '("a", "b").blend(1)',
            "prompt: .blend(1) needs one weight per prompt (2), e.g. .blend(1, 1)",
        ),
        (
            '("a", "b").blend(1, x)',
            "prompt: .blend(1, x) takes numbers in [0, 100], e.g. .blend(1, 1)",
        ),
        ('("a", "b").blend(0, 0)', "prompt: .blend(0, 0) needs a weight above 0"),
        (
            '("a", "b", "c").and(1)',
            "prompt: .and(1) needs one weight per prompt (3), e.g. .and(1, 1, 1)",
        ),
    ],
)
def test_bad_blends_are_one_line_naming_what_works(text: str, message: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_weighting(text)
    assert str(caught.value) == message
    # The line parser refuses it before any model runs (the shell's validator uses the same call).
    with pytest.raises(ParseError) as caught:
        parse_line(f"{text} [ugly] -s 10")
    assert str(caught.value) == message


def test_negative_prompt_is_checked_too() -> None:
    with pytest.raises(ParseError, match="needs one weight per prompt"):
        parse_line('a cat [("ugly", "blurry").blend(1)] -s 10')


def test_weighted_prompts_round_trip_through_the_canonical_line() -> None:
    request = parse_line('("a (red)++ cat", "a dog-").blend(1, 2) [blurry+] -s 10')
    assert parse_line(request.to_command()) == request


def test_is_weighted() -> None:
    assert not is_weighted(parse_weighting("a (plain) cat"))
    assert parse_weighting("a (plain) cat") == (F("a (plain) cat"),)
    assert is_weighted(parse_weighting("a cat+"))
    assert is_weighted(parse_weighting('("a", "b").and()'))


@given(st.text(alphabet='ab ()+-.,0123456789\\"', max_size=40))
def test_any_text_parses_and_keeps_its_words(text: str) -> None:
    """Whatever is typed, parsing never fails outside .blend/.and and weights over the limit,
    and never invents letters."""
    try:
        parsed = parse_weighting(text)
    except ParseError as err:
        assert (
            ".blend(" in text
            or ".and(" in text
            or "[0, 100]" in str(err)
            or "at most 100" in str(err)
        )
        return
    letters = "".join(ch for ch in plain_text(parsed) if ch in "ab")
    assert letters == "".join(ch for ch in text if ch in "ab")


# -- LoRA references --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "text", "loras"),
    [
        ("a cat withLora(pixel-art, 0.7)", "a cat", (LoraUse("pixel-art", 0.7),)),
        ("withLora(ink) a cat", "a cat", (LoraUse("ink", 1.0),)),
        ('a cat withLora("ink", .5)', "a cat", (LoraUse("ink", 0.5),)),
        ("a cat <lora:ink:0.6>, sketch", "a cat , sketch", (LoraUse("ink", 0.6),)),
        ("a cat <lora:detail:-1>", "a cat", (LoraUse("detail", -1.0),)),
        # AUTOMATIC1111 applies the ones inside the negative prompt too
        ("a cat [blurry <lora:bad:0.5>]", "a cat [blurry ]", (LoraUse("bad", 0.5),)),
        # in the order they first appear; a name twice is one LoRA at the summed weight
        (
            "<lora:b:0.2> x withLora(a, 0.5) <lora:b:0.3>",
            "x",
            (LoraUse("b", 0.5), LoraUse("a", 0.5)),
        ),
        ("a cat with lora (fur)", "a cat with lora (fur)", ()),
    ],
)
def test_lora_references_leave_the_prompt(
    prompt: str, text: str, loras: tuple[LoraUse, ...]
) -> None:
    assert split_loras(prompt) == (text, loras)


def test_lora_references_are_not_words_for_the_text_encoder() -> None:
    parts = split_prompt("a cat <lora:ink:0.8>:0.5 a dog withLora(x):0.5")
    assert parts.positive == (("a cat", 0.5), ("a dog", 0.5))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("a cat withLora(, 0.5)", "names no LoRA"),
        ("a cat withLora(ink, lots)", "takes one number as its weight"),
        ("a cat <lora:ink:0.5:0.2>", "takes one number as its weight"),
    ],
)
def test_bad_lora_references_are_refused_when_the_line_is_read(line: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_line(line)


# -- embedding triggers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "names"),
    [
        ("a portrait in the style of <midjourney-style>", ("midjourney-style",)),
        ("<b> then <a> then <b> again [<bad_hands>]", ("b", "a", "bad_hands")),
        ("(<ink>)1.3 cat, (<wash>:1.2) <v1.5>", ("ink", "wash", "v1.5")),
        # LoRA references, hearts, faces, HTML-ish text with spaces: no names
        ("a cat <lora:ink:0.8> withLora(x) <3 >_< <a b> <> <x/y>", ()),
    ],
)
def test_embedding_names_are_the_angle_bracket_words(prompt: str, names: tuple[str, ...]) -> None:
    assert embedding_names(prompt) == names


def test_split_triggers_takes_out_only_the_given_names() -> None:
    assert split_triggers("a <ink> cat <3 <dog><ink>", {"ink"}) == [
        ("a ", False),
        ("ink", True),
        (" cat <3 <dog>", False),
        ("ink", True),
        ("", False),
    ]
    assert split_triggers("a <ink> cat", set()) == [("a <ink> cat", False)]


def test_triggers_are_words_to_the_weighting_syntax() -> None:
    assert parse_weighting("a (<ink>)1.3 cat <wash>+") == (
        F("a "),
        F("<ink>", 1.3),
        F(" cat "),
        F("<wash>", 1.1),
    )
    assert split_prompt("a <ink> cat:0.5 <wash>:0.5 [<bad-hands>]").negative == "<bad-hands>"


# -- negative groups and weighted sub-prompts ----------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "skip", "expected"),
    [
        ("a cat", False, PromptParts((("a cat", 1.0),), "")),
        ("", False, PromptParts((("", 1.0),), "")),
        (
            "a cat [blurry] on a mat [ugly, low res]",
            False,
            PromptParts((("a cat on a mat", 1.0),), "blurry ugly, low res"),
        ),
        ("[only negative]", False, PromptParts((("", 1.0),), "only negative")),
        ("a cat:0.7 a dog:0.3", False, PromptParts((("a cat", 0.7), ("a dog", 0.3)), "")),
        ("a cat:3 a dog:1", False, PromptParts((("a cat", 0.75), ("a dog", 0.25)), "")),
        ("a cat:3 a dog:1", True, PromptParts((("a cat", 3.0), ("a dog", 1.0)), "")),
        ("a cat:0.5", False, PromptParts((("a cat", 1.0),), "")),
        ("a cat:1 a dog", False, PromptParts((("a cat", 0.5), ("a dog", 0.5)), "")),
        ("a cat:1 a dog:-1", False, PromptParts((("a cat", 0.5), ("a dog", 0.5)), "")),
        ("style: watercolor", False, PromptParts((("style: watercolor", 1.0),), "")),
        ("ratio 16\\:9 poster", False, PromptParts((("ratio 16:9 poster", 1.0),), "")),
        ("a\\:0.5 b", False, PromptParts((("a:0.5 b", 1.0),), "")),
        ("a cat:0.5 [dog] a hat:0.5", False, PromptParts((("a cat", 0.5), ("a hat", 0.5)), "dog")),
        ("a [b [c] d", False, PromptParts((("a [b d", 1.0),), "c")),
        ("a:" + "9" * 400, False, PromptParts((("a:" + "9" * 400, 1.0),), "")),
    ],
)
def test_split_prompt(prompt: str, skip: bool, expected: PromptParts) -> None:
    assert split_prompt(prompt, skip_normalize=skip) == expected


@given(
    st.lists(
        st.one_of(st.text(max_size=8), st.sampled_from([":0.5 ", ":-1 ", ":1e3", ":999999 ", "["])),
        max_size=8,
    ).map("".join)
)
@settings(max_examples=examples(300), deadline=None)
def test_split_prompt_weights_sum_to_one(prompt: str) -> None:
    """Scaled to sum 1 and within range; weights that cannot be are refused, naming the range."""
    try:
        parts = split_prompt(prompt)
    except ParseError as err:
        assert "sub-prompt weight" in str(err) and "[-100, 100]" in str(err)
        return
    assert parts.positive
    assert abs(sum(w for _, w in parts.positive) - 1.0) < 1e-9
    assert all(abs(w) <= 100 for _, w in parts.positive)


# -- the Prompt value: the prompt read once -------------------------------------------------------


def test_a_prompt_is_read_into_one_value() -> None:
    prompt = parse_prompt("a (red)1.2 cat <ink>:3 a dog+ withLora(fur, 0.5):1 [blurry <bad>]")
    assert prompt == Prompt(
        text="a (red)1.2 cat <ink>:3 a dog+ withLora(fur, 0.5):1 [blurry <bad>]",
        skip_normalize=False,
        positive=(
            SubPrompt("a (red)1.2 cat <ink>", 0.75, (F("a "), F("red", 1.2), F(" cat <ink>"))),
            SubPrompt("a dog+", 0.25, (F("a "), F("dog", 1.1))),
        ),
        negative=SubPrompt("blurry <bad>", 1.0, (F("blurry <bad>"),)),
        loras=(LoraUse("fur", 0.5),),
        embeddings=("ink", "bad"),
    )
    assert prompt.plain == "a red cat <ink>, a dog"
    assert prompt.negative.plain == "blurry <bad>"
    assert prompt.conjunction_size == 1


def test_a_prompt_without_text_has_one_empty_part() -> None:
    prompt = parse_prompt("", skip_normalize=True)
    assert prompt.positive == (SubPrompt("", 1.0, ()),)
    assert prompt.negative == SubPrompt("", 1.0, ())
    assert (prompt.loras, prompt.embeddings, prompt.plain) == ((), (), "")


def test_conjunction_size_is_the_longest_and() -> None:
    assert parse_prompt('("a", "b").and() [("c", "d", "e").and()]').conjunction_size == 3
    assert parse_prompt('("a", "b").blend(1, 1) x:1 ("c", "d").and():1').conjunction_size == 2
    assert parse_prompt('("a", "b").blend(1, 1)').conjunction_size == 1


def test_a_prompt_pickles_compares_and_hashes() -> None:
    prompt = parse_prompt('("a cat", "a (dog)1.3").blend(1, 2) <lora:x> <ink> [ugly]', True)
    again = pickle.loads(pickle.dumps(prompt))
    assert again == prompt
    assert hash(again) == hash(prompt)
    with pytest.raises(AttributeError):
        prompt.text = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a cat withLora(, 0.5)", "names no LoRA"),
        ('("a", "b").blend(1)', "needs one weight per prompt (2)"),
        ('a:0.5 [("a", "b").blend(0, 0)]', "needs a weight above 0"),
    ],
)
def test_a_prompt_that_cannot_be_used_is_refused(text: str, message: str) -> None:
    with pytest.raises(ParseError, match=re.escape(message)):
        parse_prompt(text)


_PROMPT_PIECES = st.sampled_from(
    [
        "a", "cat", " ", "  ", ":0.5 ", ":3", ":-1 ", ":0 ", "\\:", ":", ",", "[", "]", "(", ")",
        "+", "--", "1.3", ":1.2)", "\\(", "<ink>", "<a b>", "<lora:x:0.5>", "<lora:y>",
        "withLora(z, 2)", '("a cat", "b+").blend(1, 3)', '("a", "b").and()', '("x").and(1)',
        '("a", "b").blend(0, 0)',
    ]
)  # fmt: skip


@given(
    st.lists(st.one_of(_PROMPT_PIECES, st.text(max_size=3)), max_size=10).map("".join),
    st.booleans(),
)
@settings(max_examples=examples(500), deadline=None)
def test_parse_prompt_agrees_with_the_piecewise_readers(text: str, skip: bool) -> None:
    """parse_prompt gives what split_prompt, parse_weighting, split_loras and embedding_names
    give one by one (the readers the session, backend and outputs used before it existed)."""
    try:
        parts = split_prompt(text, skip)
        weighted = [parse_weighting(t) for t, _ in parts.positive]
        negative = parse_weighting(parts.negative)
    except ParseError as err:
        with pytest.raises(ParseError) as caught:
            parse_prompt(text, skip)
        assert str(caught.value) == str(err)
        return
    prompt = parse_prompt(text, skip)
    assert (prompt.text, prompt.skip_normalize) == (text, skip)
    assert tuple((part.text, part.weight) for part in prompt.positive) == parts.positive
    assert [part.fragments for part in prompt.positive] == weighted
    assert (prompt.negative.text, prompt.negative.weight) == (parts.negative, 1.0)
    assert prompt.negative.fragments == negative
    assert prompt.loras == split_loras(text)[1]
    assert prompt.embeddings == embedding_names(text)
    assert prompt.plain == ", ".join(plain_text(parsed) for parsed in weighted)
    assert prompt.negative.plain == plain_text(negative)
    chunks = [
        len(parsed.parts) if isinstance(parsed, Parts) and parsed.combine == "and" else 1
        for parsed in [*weighted, negative]
    ]
    assert prompt.conjunction_size == max(chunks)


# -- the ranges of the weights: finite, never a black picture -----------------------------------

NINES = "9" * 400  # a float reads it as infinity


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            f'("a", "b").blend({NINES}, 1)',
            "prompt: .blend(9999999999999999999999999999999999999...) has the weight "
            "9999999999999999999999999999999999999...; a weight is in [0, 100]",
        ),
        (
            '("a", "b").blend(100.5, 1)',
            "prompt: .blend(100.5, 1) has the weight 100.5; a weight is in [0, 100]",
        ),
        (
            '("a", "b").and(1, 101)',
            "prompt: .and(1, 101) has the weight 101; a weight is in [0, 100]",
        ),
        (
            "(a)100.5",
            "prompt: (a)100.5 has the weight 100.5; a group's weight is a plain number in [0, 100]",
        ),
        (
            "(a)1e2",
            "prompt: (a)1e2 has the weight 1e2; a group's weight is a plain number in [0, 100]",
        ),
        (
            "(a)NaN,",
            "prompt: (a)NaN has the weight NaN; a group's weight is a plain number in [0, 100]",
        ),
        (
            "(a)inf",
            "prompt: (a)inf has the weight inf; a group's weight is a plain number in [0, 100]",
        ),
        (
            "((a)20)5.5",
            "prompt: (a)20 would weigh 110 (its groups' weights and signs multiplied); "
            "a weight is at most 100",
        ),
        (
            "((a:9.5) b)20",
            "prompt: (a:9.5) would weigh 190 (its groups' weights and signs multiplied); "
            "a weight is at most 100",
        ),
        (
            "(a b++++++++)50",  # 50 x 1.1 ** 8
            "prompt: b++++++++ would weigh 107.2 (its groups' weights and signs multiplied); "
            "a weight is at most 100",
        ),
        (
            '("a (b)60", "c").and(2, 1)',
            "prompt: b would weigh 120 (its groups' weights and signs multiplied); "
            "a weight is at most 100",
        ),
    ],
)
def test_a_weight_out_of_range_is_refused_naming_it_and_the_range(text: str, message: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_weighting(text)
    assert str(caught.value) == message


def test_weights_at_the_edges_of_their_ranges_are_read() -> None:
    assert parse_weighting("(a)100") == (F("a", 100.0),)
    assert parse_weighting("((a)10)10") == (F("a", 100.0),)
    assert parse_weighting("a" + "+" * 48) == (F("a", round(1.1**48, 6)),)  # 97.0
    assert parse_weighting("a" + "-" * 20_000) == (F("a", 0.0),)  # no OverflowError: 0
    assert parse_weighting('("a", "b").blend(100, 0)').parts[0][1] == 100.0
    assert parse_prompt("a <lora:x:-10> withLora(y, 10)").loras == (
        LoraUse("x", -10.0),
        LoraUse("y", 10.0),
    )
    assert split_prompt("a:-100 b:100.0", skip_normalize=True).positive == (
        ("a", -100.0),
        ("b", 100.0),
    )


@pytest.mark.parametrize(
    ("text", "skip", "message"),
    [
        (
            "a:500 b",
            False,
            "prompt: :500 is a sub-prompt weight outside [-100, 100]; write \\: for a colon that "
            "is text",
        ),
        (
            "a:1 b:-0.999",
            False,
            "prompt: has sub-prompt weights that sum to 0.001: scaled to sum to 1 one would be "
            "1000, outside [-100, 100]; give weights that do not cancel out, or -x to use them as "
            "typed",
        ),
        (
            f"a <lora:x:{NINES}>",
            False,
            "prompt: <lora:x:99999999999999999999999999999... has the strength "
            "9999999999999999999999999999999999999...; a LoRA's strength is in [-10, 10]",
        ),
        (
            "a withLora(x, 10.5)",
            False,
            "prompt: withLora(x, 10.5) has the strength 10.5; a LoRA's strength is in [-10, 10]",
        ),
        (
            "a <lora:x:6> withLora(x, 6)",
            False,
            "prompt: LoRA x is used at 12 in all (its references summed); a LoRA's strength is in "
            "[-10, 10]",
        ),
    ],
)
def test_sub_prompt_and_lora_weights_out_of_range_are_refused(
    text: str, skip: bool, message: str
) -> None:
    with pytest.raises(ParseError) as caught:
        parse_prompt(text, skip)
    assert str(caught.value) == message
    parse_prompt("a:1 b:-0.999", skip_normalize=True)  # as typed, nothing is scaled
