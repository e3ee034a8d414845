"""Messages a person reads, made in the pure modules (no Frappe there): each keeps its English template
and its arguments, so the Frappe side translates the template first and fills it in after, as
`_("...").format(...)` does.

The maker is named `_` so that Frappe's extractor (babel, keywords `_` and `_lt`) collects every
template of these modules into the app's translations, as it collects `frappe._` calls. A template
names its arguments (`{setting}`), never an f-string: the text to translate must not change with them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


class Message(str):
	"""The English text (a str: whatever reads it as text, a test, a log, an error's args, still does),
	with its template and arguments for translation."""

	template: str
	arguments: dict[str, Any]

	def __new__(cls, template: str, arguments: Mapping[str, Any]) -> Message:
		text = super().__new__(cls, template.format(**arguments))
		text.template, text.arguments = template, dict(arguments)
		return text

	def translated(self, translate: Callable[[str], str]) -> str:
		"""The text in the reader's language; the English one if a translation breaks a placeholder."""
		arguments = {
			name: value.translated(translate) if isinstance(value, Message) else value
			for name, value in self.arguments.items()
		}
		try:
			return translate(self.template).format(**arguments)
		except (KeyError, IndexError, ValueError):
			return str(self)


def _(template: str, **arguments: Any) -> Message:
	return Message(template, arguments)


def translated(text: str, translate: Callable[[str], str]) -> str:
	"""`text` for the reader: a Message translated and filled in; any other text as it is."""
	return text.translated(translate) if isinstance(text, Message) else text
