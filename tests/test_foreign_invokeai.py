"""!fetch of InvokeAI pictures: 1.x-2.3 (`Dream`, `sd-metadata`) with their quirks, 3.x-5.x
(`invokeai_metadata`, `invokeai_graph`), and ComfyUI's (named, not read).

Each fixture is a PNG of our own with the chunk layout the other program writes; every command
read back must be one `invoke --dry-run` takes (parse_request(...).validate()).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image, PngImagePlugin

from invoke.errors import MetadataError
from invoke.line.parse import parse_request
from invoke.outputs import read_command, read_command_and_notes
from invoke.session import Session


def png(path: Path, chunks: dict[str, object]) -> Path:
    """A small PNG with these text chunks (dicts as JSON), as the other program wrote it."""
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value if isinstance(value, str) else json.dumps(value))
    Image.new("RGB", (8, 8), (20, 90, 160)).save(path, pnginfo=info)
    return path


def fetched(path: Path) -> tuple[str, list[str]]:
    """What !fetch reads, checked to be a command the dry run accepts."""
    command, notes = read_command_and_notes(path)
    parse_request(command).validate()
    assert all(note.startswith(f"{path.name}: ") and "\n" not in note for note in notes)
    return command, notes


def refused(path: Path) -> str:
    with pytest.raises(MetadataError) as err:
        read_command_and_notes(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    return message


# -- InvokeAI 1.x-2.3 ---------------------------------------------------------------------------

SD23 = {"app_id": "invoke-ai/InvokeAI", "app_version": "2.3.5"}


def sd_image(**image: object) -> dict[str, object]:
    base = {
        "prompt": [{"prompt": "a red barn", "weight": 1.0}],
        "steps": 30,
        "cfg_scale": 7.5,
        "seed": 42,
        "width": 512,
        "height": 512,
        "sampler": "k_lms",
        "type": "txt2img",
    }
    return {**SD23, "image": {**base, **image}}


def test_a_dream_line_that_is_no_generation_command_is_not_drawn(tmp_path: Path) -> None:
    # With sd-metadata beside it, that is read; alone, the chunk is refused in one line.
    for i, dream in enumerate(("!mask photo.png -tm hair", "<a picture of a barn>")):
        both = png(tmp_path / f"both{i}.png", {"Dream": dream, "sd-metadata": sd_image()})
        assert fetched(both)[0] == '"a red barn" -s 30 -S 42 -W 512 -H 512 -C 7.5 -A k_lms'
        alone = png(tmp_path / f"alone{i}.png", {"Dream": dream})
        assert "not a generation command" in refused(alone)
    # An embedding's <name> opening an unquoted prompt is a prompt.
    embedding = png(tmp_path / "e.png", {"Dream": "<my-style> a barn -s 20"})
    assert fetched(embedding)[0] == '"<my-style> a barn" -s 20'


def test_sd_metadata_wins_over_dream_as_in_invokeai_23(tmp_path: Path) -> None:
    # InvokeAI 2.3's !fetch (args_from_png -> metadata_loads) reads sd-metadata; Dream is its
    # fallback when sd-metadata cannot be read.
    path = png(tmp_path / "a.png", {"Dream": '"a blue barn" -s 10 -S 1', "sd-metadata": sd_image()})
    assert fetched(path)[0].startswith('"a red barn" -s 30 -S 42')
    broken = png(tmp_path / "b.png", {"Dream": '"a blue barn" -s 10 -S 1', "sd-metadata": "{"})
    assert fetched(broken)[0] == '"a blue barn" -s 10 -S 1'


def test_old_variation_spelling_is_read(tmp_path: Path) -> None:
    path = png(tmp_path / "a.png", {"Dream": '"a cat" -s 20 -S 7 -V 11,0.1;22,0.25'})
    assert fetched(path)[0] == '"a cat" -s 20 -S 7 -V 11:0.1,22:0.25'
    one = png(tmp_path / "b.png", {"Dream": '"a cat" -s 20 -S 7 -V 11,0.1'})
    assert fetched(one)[0] == '"a cat" -s 20 -S 7 -V 11:0.1'


def test_strength_steps_of_an_img2img_picture_is_its_strength(tmp_path: Path) -> None:
    meta = sd_image(type="img2img", init_img="photo.png", strength_steps=0.6)
    command = fetched(png(tmp_path / "a.png", {"sd-metadata": meta}))[0]
    assert "-I photo.png" in command and "-f 0.6" in command
    # The web UI's own keys for the init image and mask.
    meta = sd_image(init_image_path="in.png", mask_image_path="m.png", strength=0.5)
    command = fetched(png(tmp_path / "b.png", {"sd-metadata": meta}))[0]
    assert "-I in.png" in command and "-M m.png" in command and "-f 0.5" in command


@pytest.mark.parametrize(
    "switches",
    [
        "--init_color ref.png",
        "-tm hair 0.5",
        "-G 0.8",
        "-ft codeformer -cf 0.7",
        "-D left 64",
        "--inpaint_replace 0.5",
        "--seam_size 96 --seam_blur 16",
        "--tile_size 32 --infill_method tile --force_outpaint",
        "--some_future_switch a b",
    ],
)
def test_invokeai_switches_we_lack_are_dropped_with_a_note(tmp_path: Path, switches: str) -> None:
    dream = f'"a cat" -s 20 -S 7 {switches} -C 8'
    command, notes = fetched(png(tmp_path / "a.png", {"Dream": dream}))
    assert command == '"a cat" -s 20 -S 7 -C 8.0'
    names = [word for word in switches.split() if word.startswith("-")]
    assert len(notes) == 1 and all(name in notes[0] for name in names), notes


def test_a_quoted_file_in_an_outcrop_fix_is_unquoted(tmp_path: Path) -> None:
    meta = sd_image()
    fix = '!fix "my photo.png" -s 40 -S 42 -W 512 -H 512 -C 7.5 -A k_lms -c top 64 -G 0.5'
    meta["image"]["postprocessing"] = [{"tool": "outcrop", "dream_command": fix}]
    command, notes = fetched(png(tmp_path / "a.png", {"sd-metadata": meta}))
    assert "-I 'my photo.png'" in command and '"' not in command.split('"')[-1]
    assert len(notes) == 1 and "-G" in notes[0]


def test_legacy_blend_is_read_as_a_blend(tmp_path: Path) -> None:
    dream = png(tmp_path / "a.png", {"Dream": '"dog:2,cat:1" -s 20'})
    assert fetched(dream)[0] == '"dog:2 cat:1" -s 20'
    meta = png(tmp_path / "b.png", {"sd-metadata": sd_image(prompt="dog:2, cat:1")})
    assert fetched(meta)[0].startswith('"dog:2 cat:1"')
    # A comma with no weight before it is text.
    plain = png(tmp_path / "c.png", {"Dream": '"a dog, a cat" -s 20'})
    assert fetched(plain)[0] == '"a dog, a cat" -s 20'


def test_an_invokeai_sampler_we_lack_is_named(tmp_path: Path) -> None:
    meta = sd_image(sampler="no_such_sampler")
    command, notes = fetched(png(tmp_path / "a.png", {"sd-metadata": meta}))
    assert "-A" not in command and "no_such_sampler" in notes[0]
    # In a Dream line: the rest of the line is still read.
    dream = png(tmp_path / "b.png", {"Dream": '"a cat" -s 20 -A no_such_sampler -C 8'})
    command, notes = fetched(dream)
    assert command == '"a cat" -s 20 -C 8.0' and "-A no_such_sampler" in notes[0]
    kept = png(tmp_path / "c.png", {"Dream": '"a cat" -s 20 -A k_euler_a'})
    assert fetched(kept) == ('"a cat" -s 20 -A k_euler_a', [])


# -- InvokeAI 3.x-5.x ---------------------------------------------------------------------------


def core_metadata(**fields: object) -> dict[str, object]:
    """invokeai_metadata as InvokeAI 4.x-5.x's core_metadata node writes it (txt2img)."""
    base = {
        "generation_mode": "txt2img",
        "positive_prompt": "a lighthouse at dusk",
        "negative_prompt": "blurry",
        "width": 768,
        "height": 512,
        "seed": 1234,
        "rand_device": "cpu",
        "cfg_scale": 6.5,
        "cfg_rescale_multiplier": 0,
        "steps": 28,
        "scheduler": "ddim",
        "seamless_x": False,
        "seamless_y": False,
        "model": {
            "key": "k1",
            "hash": "h",
            "name": "Dreamshaper 8",
            "base": "sd-1",
            "type": "main",
        },
        "loras": [],
        "app_version": "5.4.2",
    }
    return {**base, **fields}


def test_invokeai_5_txt2img_reads_back(tmp_path: Path) -> None:
    command, notes = fetched(png(tmp_path / "a.png", {"invokeai_metadata": core_metadata()}))
    request = parse_request(command)
    assert request.prompt == "a lighthouse at dusk [blurry]"
    assert (request.steps, request.seed, request.width, request.height) == (28, 1234, 768, 512)
    assert (request.cfg_scale, request.sampler) == (6.5, "ddim")
    assert notes == ["a.png: made with model 'Dreamshaper 8' (choose it with !switch)"]


def test_braces_and_bars_in_an_invokeai_prompt_are_text_not_a_sweep(tmp_path: Path) -> None:
    from invoke.line.sweep import expand

    meta = core_metadata(positive_prompt="a {red|blue} sign", negative_prompt="{ugly}")
    command, _ = fetched(png(tmp_path / "a.png", {"invokeai_metadata": meta}))
    (line,) = expand(parse_request(command), [])  # one picture, not two
    assert line.prompt == "a \\{red\\|blue\\} sign [\\{ugly\\}]"
    assert line.parsed_prompt.positive[0].text == "a {red|blue} sign"
    assert line.parsed_prompt.negative.text == "{ugly}"


def test_invokeai_3_loras_seamless_and_img2img(tmp_path: Path) -> None:
    meta = core_metadata(
        generation_mode="img2img",
        model={"model_name": "sd15", "base_model": "sd-1", "model_type": "main"},
        loras=[{"lora": {"model_name": "pixel_art", "base_model": "sd-1"}, "weight": 0.75}],
        seamless_x=True,
        strength=0.55,
        init_image="d3a1-photo.png",
    )
    request = parse_request(fetched(png(tmp_path / "a.png", {"invokeai_metadata": meta}))[0])
    assert "<lora:pixel_art:0.75>" in request.prompt
    assert request.seamless and request.seamless_axes == ("x",)
    assert (request.init_img, request.strength) == ("d3a1-photo.png", 0.55)


def test_invokeai_denoising_start_is_one_less_the_strength(tmp_path: Path) -> None:
    meta = core_metadata(generation_mode="img2img", init_image="x.png", denoising_start=0.25)
    request = parse_request(fetched(png(tmp_path / "a.png", {"invokeai_metadata": meta}))[0])
    assert request.strength == 0.75


def test_invokeai_hires_fix_and_loras_of_4x(tmp_path: Path) -> None:
    lora = {"model": {"key": "k", "name": "detail", "base": "sd-1", "type": "lora"}, "weight": 1}
    meta = core_metadata(hrf_enabled=True, hrf_method="ESRGAN", hrf_strength=0.45, loras=[lora])
    request = parse_request(fetched(png(tmp_path / "a.png", {"invokeai_metadata": meta}))[0])
    assert request.hires_fix and request.strength == 0.45
    assert "<lora:detail:1>" in request.prompt


def test_what_has_no_equivalent_is_named_in_one_note(tmp_path: Path) -> None:
    meta = core_metadata(
        controlnets=[{"control_model": {"name": "canny"}}],
        ipAdapters=[{"ip_adapter_model": {"name": "ip"}}],
        vae={"name": "sdxl-vae"},
        scheduler="a_future_scheduler",
        positive_style_prompt="watercolour",
        canvas_v2_metadata={"controlLayers": [{"id": "l1"}], "inpaintMasks": []},
        cfg_scale=[7.0, 6.0, 5.0],
    )
    command, notes = fetched(png(tmp_path / "a.png", {"invokeai_metadata": meta}))
    dropped = [note for note in notes if "dropped" in note]
    assert len(dropped) == 1
    for what in (
        "ControlNet unit 0",
        "IP-Adapter unit 0",
        "sdxl-vae",
        "a_future_scheduler",
        "watercolour",
        "canvas layers",
        "cfg_scale per step",
    ):
        assert what in dropped[0]
    assert "-A" not in command
    # SDXL's style prompt equal to the prompt (as InvokeAI's UI writes it) is nothing lost.
    same = core_metadata(positive_style_prompt="a lighthouse at dusk")
    assert fetched(png(tmp_path / "b.png", {"invokeai_metadata": same}))[1] == [
        "b.png: made with model 'Dreamshaper 8' (choose it with !switch)"
    ]


def test_invokeai_graph_alone_is_read_from_its_metadata_node(tmp_path: Path) -> None:
    graph = {
        "id": "g",
        "nodes": {
            "noise": {"id": "noise", "type": "noise", "seed": 9},
            "meta": {"id": "meta", "type": "core_metadata", **core_metadata(seed=5)},
        },
        "edges": [],
    }
    command = fetched(png(tmp_path / "a.png", {"invokeai_graph": graph}))[0]
    assert parse_request(command).seed == 5
    bare = png(tmp_path / "b.png", {"invokeai_graph": {"nodes": {"n": {"type": "noise"}}}})
    assert "no generation command" in refused(bare)


def test_invokeai_metadata_without_a_prompt_is_refused_naming_invokeai(tmp_path: Path) -> None:
    path = png(tmp_path / "a.png", {"invokeai_metadata": {"app_version": "5.0.0"}})
    message = refused(path)
    assert "invokeai_metadata" in message and "not made by InvokeAI" not in message


# -- ComfyUI, and the session ------------------------------------------------------------------


def test_comfyui_pictures_are_named_and_not_read(tmp_path: Path) -> None:
    path = png(tmp_path / "a.png", {"prompt": {"3": {"class_type": "KSampler"}}, "workflow": {}})
    message = refused(path)
    assert "ComfyUI" in message and "does not read" in message


def test_fetch_shows_the_notes_and_gives_the_command(tmp_path: Path) -> None:
    path = png(tmp_path / "a.png", {"Dream": '"a cat" -s 20 -G 0.8'})
    notes: list[str] = []
    command = Session.fetch(SimpleNamespace(_note=notes.append), str(path))  # type: ignore[arg-type]
    assert command == '"a cat" -s 20' == read_command(path)
    assert notes == ["a.png: dropped InvokeAI's -G (not in this program)"]
