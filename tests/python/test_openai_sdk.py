"""The official openai SDK as a real client of the gateway."""

import openai
import pytest

from conftest import KEY


def client(gateway, key=KEY):
    return openai.OpenAI(base_url=f"{gateway.base}/v1", api_key=key, max_retries=0, timeout=10)


def test_plain_completion(gateway):
    r = client(gateway).chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "user", "content": "hello from the sdk"}]
    )
    assert r.headers["x-modelgate-model"] == "echo"
    assert r.headers["x-modelgate-policy"] == "default"
    c = r.parse()
    assert c.object == "chat.completion"
    assert c.choices[0].message.role == "assistant"
    assert c.choices[0].message.content == "[echo test model] hello from the sdk"
    assert c.choices[0].finish_reason == "stop"
    assert c.usage.prompt_tokens > 0 and c.usage.completion_tokens == 7


def test_streaming_completion(gateway):
    stream = client(gateway).chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert text == "[echo test model] one two three"
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens == 6


def test_models_list_and_retrieve(gateway):
    c = client(gateway)
    models = c.models.list()
    ids = [m.id for m in models.data]
    assert ids == ["echo"]
    m = c.models.retrieve("echo")
    assert m.id == "echo" and m.object == "model"
    # A test model, not a language model: it has no openness class.
    assert m.model_extra["openness"] == "unknown"
    assert m.model_extra["test_only"] is True


def test_error_classes(gateway):
    c = client(gateway)
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="echo", messages=[])
    assert e.value.status_code == 400
    assert e.value.body["param"] == "messages"

    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert e.value.body["code"] == "model_not_found"

    with pytest.raises(openai.AuthenticationError) as e:
        client(gateway, key="mg-wrong").chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "x"}]
        )
    assert e.value.status_code == 401
    assert e.value.body["type"] == "authentication_error"

    with pytest.raises(openai.NotFoundError):
        client(gateway).models.retrieve("gpt-17")
