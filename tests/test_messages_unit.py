"""Messages of the pure modules: English as text, translated at the Frappe side, every template a
literal whose placeholders are the arguments given (what Frappe's extractor and translators need)."""

import ast
import string
from pathlib import Path

import pytest

from verenigingen_perf.utils.performance import config
from verenigingen_perf.utils.performance.alerts import rules
from verenigingen_perf.utils.performance.messages import Message, _, translated

ROOT = Path(__file__).resolve().parent.parent / "verenigingen_perf" / "utils" / "performance"
# the modules that make their messages with messages._ (no Frappe there)
MESSAGE_MODULES = (
	ROOT / "config" / "validation.py",
	ROOT / "config" / "parsers.py",
	ROOT / "config" / "loading.py",
	ROOT / "alerts" / "rules.py",
	ROOT / "export" / "otlp.py",
)
DUTCH = {
	"{setting}: must be a number, got {value}": "{setting}: moet een getal zijn, niet {value}",
	"{where}: {field}: {message}": "{where}: {field}: {message}",
	"rule {name}": "regel {name}",
	"must not be empty": "mag niet leeg zijn",
}


def dutch(template: str) -> str:
	return DUTCH.get(template, template)


def test_a_message_is_its_english_text_and_translates_before_it_is_filled_in():
	message = _("{setting}: must be a number, got {value}", setting="sampling_rate", value="'x'")
	assert message == "sampling_rate: must be a number, got 'x'" and isinstance(message, str)
	assert translated(message, dutch) == "sampling_rate: moet een getal zijn, niet 'x'"
	assert translated("plain text", dutch) == "plain text"


def test_arguments_that_are_messages_are_translated_too():
	with pytest.raises(rules.RuleError) as refused:
		rules.validate({"name": "", "source": "health", "metric": "score"})
	first = refused.value.errors[0]
	assert first == "rule (unnamed): name: must not be empty"
	assert translated(first, dutch) == "rule (unnamed): name: mag niet leeg zijn"
	with pytest.raises(rules.RuleError) as refused:
		rules.validate({"name": "slow", "source": "health", "metric": "score", "threshold": "x"})
	assert any(translated(e, dutch).startswith("regel 'slow': threshold: ") for e in refused.value.errors)


def test_a_translation_that_breaks_a_placeholder_falls_back_to_english():
	message = _("{setting}: must be a number, got {value}", setting="a", value="b")
	assert message.translated(lambda template: "{instelling} kapot") == "a: must be a number, got b"


def test_configuration_errors_carry_their_templates():
	with pytest.raises(config.ConfigValidationError) as refused:
		config.validate_overrides("production", {"sampling_rate": "x", "unknown_key": 1})
	assert all(isinstance(error, Message) for error in refused.value.errors), refused.value.errors
	assert "sampling_rate: must be a number, got 'x'" in refused.value.errors


def _message_calls(tree: ast.AST):
	for node in ast.walk(tree):
		if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_":
			yield node


@pytest.mark.parametrize("path", MESSAGE_MODULES, ids=lambda path: path.name)
def test_every_template_is_a_literal_with_exactly_its_arguments(path):
	tree = ast.parse(path.read_text())
	calls = list(_message_calls(tree))
	assert calls, f"{path.name} makes no message"
	for call in calls:
		assert len(call.args) == 1 and isinstance(call.args[0], ast.Constant), ast.unparse(call)
		template = call.args[0].value
		placeholders = {name for _text, name, _spec, _conv in string.Formatter().parse(template) if name}
		assert placeholders == {keyword.arg for keyword in call.keywords}, ast.unparse(call)


@pytest.mark.parametrize("path", MESSAGE_MODULES, ids=lambda path: path.name)
def test_no_error_is_an_f_string(path):
	"""An f-string message could not be translated: errors are raised and listed as `_()` messages."""
	tree = ast.parse(path.read_text())
	for node in ast.walk(tree):
		if isinstance(node, ast.Call):
			name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
			if name in ("ValueError", "RuleError", "ConfigValidationError", "append", "field_error", "error"):
				arguments = [*node.args, *(e for a in node.args if isinstance(a, ast.List) for e in a.elts)]
				assert not any(isinstance(a, ast.JoinedStr) for a in arguments), ast.unparse(node)
