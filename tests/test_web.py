"""The web page in real headless Chromium (Debian's, driven by playwright): a prompt typed and
generated shows the image forming step by step, then lands in the gallery; a mask painted on the
canvas inpaints exactly the painted area; uploads go image-to-image; results give variations; the
model menu switches the form to another model, whose example prompts fill the prompt."""

import re
from pathlib import Path

import pytest
from PIL import Image

from conftest import HeldPipeline, live_server, tiny_config
from diffuse.pipeline import Pipeline
from diffuse.server import create_app

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"no {CHROMIUM}: `make test` installs Debian's chromium for these tests")


@pytest.fixture(scope="module")
def digits_model_dir(tmp_path_factory):
    """A second model unlike the first: digits at 64 px (so other sizes and other prompts)."""
    from diffuse.training import Trainer
    out = tmp_path_factory.mktemp("second") / "digits"
    Trainer(tiny_config(out, data="digits", image_size=64, steps=10)).run()
    return out


@pytest.fixture(scope="module")
def site(tiny_model_dir, digits_model_dir, tmp_path_factory):
    held = HeldPipeline(Pipeline.load(tiny_model_dir), delay=0.05)  # slow enough to see every step
    models = [held, Pipeline.load(digits_model_dir)]
    with live_server(create_app(models, output_dir=tmp_path_factory.mktemp("served"))) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, site):
    page = browser.new_page()
    page.goto(site)
    page.wait_for_selector("#sampler option", state="attached")  # the form is filled from /v1/diffuse/config
    yield page
    page.close()


def generate(page, prompt: str, steps: int, seed: int, cards: int):
    """Fill the form, press Generate, wait until the gallery holds `cards` results; the newest first."""
    page.fill("#prompt", prompt)
    page.fill("#steps", str(steps))
    page.fill("#seed", str(seed))
    page.click("#generate")
    page.wait_for_function(f"document.querySelectorAll('.card img').length >= {cards}")
    card = page.locator(".card").first
    card.locator("img").evaluate("img => img.decode()")
    return card


def pixels(page, card_index: int) -> list[int]:
    """A gallery image's RGBA pixels, read back through a canvas."""
    return page.evaluate("""(k) => {
        const img = document.querySelectorAll('.card img')[k], c = document.createElement('canvas');
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
        return Array.from(ctx.getImageData(0, 0, c.width, c.height).data);
    }""", card_index)


def right_half(rgba: list[int], size: int = 32) -> list[int]:
    return [rgba[(y * size + x) * 4 + c] for y in range(size) for x in range(20, size) for c in range(3)]


def test_generate_shows_the_image_forming_then_the_result(page):
    page.evaluate("""() => {
        const preview = document.getElementById('preview');
        window.previews = new Set();
        new MutationObserver(() => window.previews.add(preview.src))
            .observe(preview, {attributes: true, attributeFilter: ['src']});
    }""")
    card = generate(page, "a red circle on a white background", steps=6, seed=1, cards=1)
    assert page.evaluate("window.previews.size") >= 4  # the preview changed at (nearly) every step
    assert page.evaluate("[...window.previews].every(s => s.startsWith('data:image/png'))")
    assert "done" in page.inner_text("#progress")
    text = card.inner_text()
    assert "a red circle on a white background" in text and "seed 1" in text and "6 steps dpmpp_2m" in text
    assert card.locator("img").evaluate("img => img.naturalWidth") == 32
    link = card.locator("a.download")
    assert link.get_attribute("href").startswith("blob:") and link.get_attribute("download").endswith(".png")
    with page.expect_download() as download:
        link.click()
    assert Path(download.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_paint_a_mask_and_inpaint(page):
    generate(page, "a blue square on a black background", steps=3, seed=2, cards=1)
    page.click(".card .edit")
    page.wait_for_selector("#init-box", state="visible")
    box = page.locator("#mask-canvas").bounding_box()
    page.mouse.move(box["x"] + 20, box["y"] + 20)
    page.mouse.down()
    page.mouse.move(box["x"] + 90, box["y"] + box["height"] - 20, steps=12)  # the left third, top to bottom
    page.mouse.up()
    card = generate(page, "a yellow star", steps=3, seed=3, cards=2)
    assert "inpaint" in card.inner_text()
    edited, source = pixels(page, 0), pixels(page, 1)
    assert right_half(edited) == right_half(source)  # unpainted: kept exactly
    assert edited != source  # painted: repainted


def test_upload_goes_image_to_image_and_results_vary(page, tmp_path):
    upload = tmp_path / "upload.png"
    Image.new("RGB", (50, 50), (20, 200, 40)).save(upload)  # any size: the page draws it at the chosen size
    page.set_input_files("#init-file", str(upload))
    page.wait_for_selector("#init-box", state="visible")
    card = generate(page, "a green circle", steps=4, seed=4, cards=1)
    assert "img2img" in card.inner_text() and "strength 0.8" in card.inner_text()
    card.locator(".vary").click()
    page.wait_for_function("document.querySelectorAll('.card img').length >= 2")
    varied = page.locator(".card").first.inner_text()
    # a variation draws a fresh seed (compared whole: a random seed may well start with 4)
    assert "a green circle" in varied and "strength 0.4" in varied
    assert re.search(r"seed (\d+)", varied).group(1) != "4"


def test_the_page_asks_for_the_api_key(browser, tiny_model_dir, tmp_path):
    pipe = Pipeline.load(tiny_model_dir)
    with live_server(create_app(pipe, output_dir=tmp_path, api_key="s3cret")) as base:
        page = browser.new_page()
        page.goto(base)
        page.wait_for_selector("#key-row", state="visible")  # the config request got a 401
        # the message follows in the catch of the failed request, a moment after the row shows
        page.wait_for_function("document.getElementById('error').textContent.includes('API key')")
        page.fill("#api-key", "s3cret")
        page.press("#api-key", "Enter")
        page.wait_for_selector("#sampler option", state="attached")
        card = generate(page, "a red circle", steps=2, seed=5, cards=1)  # images come back with the key too
        assert card.locator("img").evaluate("img => img.naturalWidth") == 32
        page.close()


def test_the_model_menu_switches_the_form_and_its_example_prompts(page):
    assert page.is_hidden("#preview") and page.is_visible("#placeholder")  # no broken image before a run
    assert page.locator("#model option").all_inner_texts() == ["run", "digits"]  # the default first
    assert page.input_value("#model") == "run" and page.input_value("#size") == "32x32"
    chips = page.locator("#examples .chip")
    assert chips.count() == 6 and all(t.endswith("background") for t in chips.all_inner_texts())

    page.select_option("#model", "digits")
    sizes = page.locator("#size option").all_inner_texts()
    assert sizes == ["64x64", "128x128", "192x192", "256x256"] and "64px" in page.inner_text("#model-info")
    prompts = chips.all_inner_texts()
    assert len(prompts) == 6 and not any("background" in p for p in prompts)
    chips.nth(2).click()
    assert page.input_value("#prompt") == prompts[2]
    page.fill("#steps", "2")
    page.click("#generate")
    page.wait_for_function("document.querySelectorAll('.card img').length >= 1")
    card = page.locator(".card").first
    card.locator("img").evaluate("img => img.decode()")
    assert prompts[2] in card.inner_text() and "digits" in card.inner_text()
    assert card.locator("img").evaluate("img => img.naturalWidth") == 64  # drawn by the 64 px model
    assert page.is_visible("#preview") and page.is_hidden("#placeholder")


def test_after_a_run_its_steps_can_be_scrubbed_through(page):
    assert page.is_hidden("#formed")  # nothing to show before a run
    generate(page, "a blue star", steps=5, seed=3, cards=1)
    page.wait_for_selector("#formed", state="visible")
    slider = page.locator("#formed-step")
    assert slider.get_attribute("max") == "4" and slider.input_value() == "4"  # the last step first
    assert "step 5 of 5" in page.inner_text("#formed-label")
    last = (page.get_attribute("#formed-noisy", "src"), page.get_attribute("#formed-guess", "src"))
    slider.fill("0")  # a range input takes fill(): it sets the value and fires input
    assert "step 1 of 5, sigma 80.000" in page.inner_text("#formed-label")
    first = (page.get_attribute("#formed-noisy", "src"), page.get_attribute("#formed-guess", "src"))
    assert first[0] != last[0] and first[1] != last[1] and all(s.startswith("data:image/png") for s in first)


def test_an_uploaded_image_says_who_made_it(page, tiny_model_dir, tmp_path):
    from diffuse.credentials import load_credentials
    from diffuse.export import save_png
    made = tmp_path / "made.png"
    image, = Pipeline.load(tiny_model_dir)("a red circle", seed=12, steps=2)
    save_png(image, made, load_credentials())
    page.set_input_files("#init-file", str(made))
    page.wait_for_function("document.getElementById('made-by').textContent.includes('Recorded')")
    text = page.inner_text("#made-by")
    assert "valid: unchanged since it was signed" in text and "seed 12" in text and "diffuse generate" in text
    plain = tmp_path / "photo.png"
    Image.new("RGB", (20, 20), (90, 90, 200)).save(plain)
    page.set_input_files("#init-file", str(plain))
    page.wait_for_function("document.getElementById('made-by').textContent.includes('No diffuse parameters')")
    assert "No content credentials." in page.inner_text("#made-by")


@pytest.fixture(scope="module")
def student_site(tiny_model_dir, tmp_path_factory):
    """A tiny distilled student (two steps) served beside its teacher."""
    from diffuse.distill import DistillConfig, distill
    out = distill(DistillConfig(teacher=str(tiny_model_dir), out=str(tmp_path_factory.mktemp("live") / "fast"),
                                steps=2, start_steps=2, iterations=2, batch_size=4), progress=lambda m: None)
    models = [Pipeline.load(tiny_model_dir), Pipeline.load(out)]
    with live_server(create_app(models, output_dir=tmp_path_factory.mktemp("served-live"))) as base:
        yield base


def test_live_mode_draws_a_students_image_as_you_type(browser, student_site):
    page = browser.new_page()
    page.goto(student_site)
    page.wait_for_selector("#sampler option", state="attached")
    assert page.is_hidden("#live-row")  # the teacher: 40 passes an image, too slow to draw per keystroke
    page.select_option("#model", "fast")
    assert page.is_visible("#live-row") and page.is_disabled("#steps") and "distilled to 2 steps" in page.inner_text("#model-info")
    page.check("#live-mode")
    assert page.input_value("#seed") != ""  # one seed while typing: Generate then draws the image on show
    page.type("#prompt", "a red circle", delay=20)
    page.wait_for_function("document.getElementById('progress').textContent.startsWith('live: done')")
    assert page.is_visible("#preview") and page.locator(".card").count() == 0  # live images stay out of the gallery
    first = page.get_attribute("#preview", "src")
    page.fill("#prompt", "")
    page.evaluate("document.getElementById('progress').textContent = ''")
    page.type("#prompt", "a blue square", delay=20)
    page.wait_for_function("document.getElementById('progress').textContent.startsWith('live: done')")
    assert page.get_attribute("#preview", "src") != first
    page.click("#generate")  # Generate keeps it: the same request goes to the gallery
    page.wait_for_function("document.querySelectorAll('.card img').length >= 1")
    assert "a blue square" in page.locator(".card").first.inner_text()
    page.close()
