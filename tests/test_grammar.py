import pytest

from intentops.grammar import Call, GrammarError, normalise, parse_call, parse_calls, render_calls


@pytest.mark.parametrize(
    ("text", "calls"),
    [
        ("play_music()", [Call("play_music")]),
        ("weather_search(杭州)", [Call("weather_search", ("杭州",))]),
        ("music_query_player(十年)", [Call("music_query_player", ("十年",))]),
        ("f(a,b)", [Call("f", ("a", "b"))]),
        ("f( a , b )", [Call("f", ("a", "b"))]),
        ('send_message(Bob, "hi, see you; bye")', [Call("send_message", ("Bob", "hi, see you; bye"))]),
        ("send_message(Bob, 'it''s')", None),
        ("music_query_player（十年）", [Call("music_query_player", ("十年",))]),
        ("f（a，b）；g()", [Call("f", ("a", "b")), Call("g")]),
        ("a();b(x)", [Call("a"), Call("b", ("x",))]),
        ("a(); b(x);", [Call("a"), Call("b", ("x",))]),
        ("say(“你好，世界”)", [Call("say", ("你好，世界",))]),
        ('say("a \\"quoted\\" word")', [Call("say", ('a "quoted" word',))]),
    ],
)
def test_parse(text, calls):
    if calls is None:
        with pytest.raises(GrammarError):
            parse_calls(text)
        return
    assert parse_calls(text) == calls
    assert parse_calls(render_calls(calls)) == calls


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty output"),
        ("   ", "empty output"),
        ("play_music", "expected '('"),
        ("f(a", "missing ')'"),
        ("f(,)", "empty argument"),
        ("f(a(b))", "unexpected '('"),
        ("f() g()", "unexpected 'g'"),
        ('f("abc)', "unterminated"),
        ("123()", "expected a function name"),
    ],
)
def test_parse_errors_are_typed_and_name_the_text(text, reason):
    with pytest.raises(GrammarError) as info:
        parse_calls(text)
    assert reason in info.value.reason
    assert info.value.text == text


def test_non_string_is_a_grammar_error():
    with pytest.raises(GrammarError):
        parse_calls(None)  # type: ignore[arg-type]


def test_render_quotes_only_when_needed():
    assert render_calls([Call("f", ("杭州", "a,b"))]) == 'f(杭州,"a,b")'
    assert normalise("f（杭州 ，  b）") == "f(杭州,b)"


def test_parse_call_requires_exactly_one():
    assert parse_call("f(x)") == Call("f", ("x",))
    with pytest.raises(GrammarError, match="expected one call"):
        parse_call("f();g()")
