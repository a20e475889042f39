"Settings and the API's contract without a server: lists from the command line and the environment, what is not ours."
import pytest
from pydantic import ValidationError

from gptlite.schemas import CompletionRequest
from gptlite.settings import ServerSettings, build_parser, settings_from_env


def settings_from_cli(argv: list[str]) -> ServerSettings:
    args = {k: v for k, v in vars(build_parser().parse_args(argv)).items() if v is not None and k != "log_level"}
    return ServerSettings(**args)


@pytest.mark.parametrize("argv", [["--allowed-hosts", "a.example,b.example"], ["--allowed-hosts", "a.example", "b.example"],
                                  ["--allowed-hosts", "a.example, b.example,"]])
def test_list_flags_take_commas_or_spaces(argv):
    assert settings_from_cli(argv).allowed_hosts == ["a.example", "b.example"]


def test_the_environment_takes_comma_separated_lists_and_leaves_other_variables_alone(monkeypatch):
    env = {"GPTLITE_CORS_ORIGINS": "http://a.example, http://b.example", "GPTLITE_API_URL": "http://127.0.0.1:8000",
           "GPTLITE_MAX_QUEUE": "8"}
    s = settings_from_env(env)
    assert s.cors_origins == ["http://a.example", "http://b.example"] and s.max_queue == 8
    for k, v in env.items(): monkeypatch.setenv(k, v)
    assert settings_from_env() == s                      # os.environ, read by pydantic-settings, gives the same
    with pytest.raises(ValueError, match="GPTLITE_MAX_QUEUE: Input should be a valid integer"):
        settings_from_env({"GPTLITE_MAX_QUEUE": "lots"})


def test_unsupported_openai_options_say_so():
    assert CompletionRequest(model="m", prompt="x", frequency_penalty=0).frequency_penalty == 0
    with pytest.raises(ValidationError, match="not supported by gptlite: only 0"):
        CompletionRequest(model="m", prompt="x", presence_penalty=0.5)
