"""The Space as an MCP server: the app launched on loopback (tiny models) serves its tools over MCP's streamable
HTTP transport; an MCP client lists them, reads their agent-facing descriptions and calls detect and provenance
on a C2PA-signed image sent as a base64 data URL, as an agent would.

    python -m pytest tests/test_mcp.py
"""

import asyncio
import base64
import socket

import pytest
from PIL import Image

import app
from helpers import make_tiny_models, provenance_files

pytest.importorskip("mcp", reason="pip install 'gradio[mcp]'")
from mcp import ClientSession  # noqa: E402
from mcp.client.streamable_http import streamablehttp_client  # noqa: E402

TOOLS = {"detect", "provenance", "model_thresholds", "compare", "explain_lime", "explain_gradcam", "inside_model",
         "video", "batch", "model_cards"}


@pytest.fixture(scope="module")
def mcp_url(tmp_path_factory):
    demo = app.build_demo(make_tiny_models(tmp_path_factory.mktemp("tiny-models"))).queue(**app.QUEUE_OPTIONS)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True,
                            **app.LAUNCH_OPTIONS)
    yield url.rstrip("/") + "/gradio_api/mcp/"
    demo.close()


@pytest.fixture(scope="module")
def signed_image(tmp_path_factory):
    """A C2PA-signed JPEG of a face (the repository's example face, so detect finds one) as a data URL."""
    face = Image.open(app.ROOT / "examples" / "real-ffhq.jpg").convert("RGB")
    files, _ = provenance_files(str(tmp_path_factory.mktemp("signed")), face)
    with open(files["c2pa-ai.jpg"], "rb") as f:
        return "data:image/jpeg;base64," + base64.b64encode(f.read()).decode()


def run(url, steps):
    """Open an MCP session to `url` and return `await steps(session)`."""
    async def main():
        async with streamablehttp_client(url, timeout=60, sse_read_timeout=300) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await steps(session)

    return asyncio.run(main())


def test_the_tools_are_listed_with_descriptions_for_an_agent(mcp_url):
    tools = {tool.name: tool for tool in run(mcp_url, lambda s: s.list_tools()).tools}
    assert set(tools) == TOOLS
    detect = tools["detect"]
    assert detect.description.startswith("Judge whether each face in a photo is real or AI-generated")
    assert "Returns:" in detect.description and "provenance as JSON" in detect.description
    properties = detect.inputSchema["properties"]
    assert list(properties) == ["image", "model_name", "fake_threshold", "real_threshold"]
    assert properties["image"]["description"].startswith("The photo, as the original file")
    assert properties["model_name"]["enum"] == ["tuned-cnn", "xception", "ensemble"]
    assert tools["provenance"].description.startswith("Read what an image file says about its own origin")
    assert all(tool.description for tool in tools.values())  # no tool left for an agent to guess at


def test_detect_and_provenance_answer_through_mcp(mcp_url, signed_image):
    arguments = {"image": signed_image, "model_name": "xception", "fake_threshold": 0.6, "real_threshold": 0.4}

    async def on_progress(step, total, message):
        pass  # asking for progress is what matters: it sends the token

    async def steps(session):
        # With a progress token (what clients send when they show progress) gradio returns each output apart;
        # without one (gradio 6.31) all the outputs come back as one text, the repr of their tuple.
        detect = await session.call_tool("detect", arguments, progress_callback=on_progress)
        plain = await session.call_tool("detect", arguments)
        alone = await session.call_tool("provenance", {"image": signed_image})
        return detect, plain, alone

    detect, plain, alone = run(mcp_url, steps)
    assert not detect.isError and not plain.isError, (detect.content, plain.content)
    kinds = [item.type for item in detect.content]
    assert kinds == ["image", "text", "text", "text", "text", "text"], kinds  # the photo and its URL, 4 outputs
    texts = [item.text for item in detect.content if item.type == "text"]
    assert texts[1].startswith("1 face: **") and "Model **xception**" in texts[1]
    says = ("**What the file says: AI-generated · signed, certificate not trusted · TestDiffusion 1.0** (strength of "
            "evidence: moderate)\n\nContent credentials signed by Test Signer (Test Generator Inc) say this image was "
            "created by an AI model (claim generator: TestDiffusion 1.0).")
    assert texts[3].startswith(says)
    assert "'signature': 'untrusted'" in texts[4] and "'generator': 'TestDiffusion 1.0'" in texts[4]
    assert [item.type for item in plain.content] == ["text"] and "signed by Test Signer" in plain.content[0].text
    assert [item.type for item in alone.content] == ["text", "text"]  # not queued: its outputs apart
    assert alone.content[0].text.startswith(says) and "'validation_state': 'Valid'" in alone.content[1].text


def test_a_bad_image_is_one_sentence_through_mcp(mcp_url):
    not_an_image = "data:image/png;base64," + base64.b64encode(b"this is not an image").decode()
    result = run(mcp_url, lambda s: s.call_tool("provenance", {"image": not_an_image}))
    assert result.isError and "is not an image this app can read" in result.content[0].text, result.content
