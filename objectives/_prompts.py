"""Prompt templates, by name or literal; the question goes where "{question}" stands.

    resolve_template("ja_alpaca_cot")      # the paper's MGSM-JA prompt (below)
    resolve_template("Q: {question}\\nA:")  # a literal template

MGSM_JA_PROMPT_TEMPLATE is the prompt of the paper's MGSM-JA evaluation: JA_ALPACA_COT_TEMPLATE in
SakanaAI/evolutionary-model-merge, evomerge/models/prompt_templates.py (used by
evomerge/models/causallm.py with every configs/llm/*.yaml: `template: ja-alpaca-cot`), with its
"{input}" slot named "{question}" here. Their vLLM run is greedy (temperature 0), max_tokens 1024,
stop=MGSM_JA_STOP_STRINGS.

The question is inserted with str.replace, not str.format, so templates may contain braces.
"""
from __future__ import annotations

from evo_core import Registry

MGSM_JA_PROMPT_TEMPLATE = (
    "以下に、あるタスクを説明する指示があります。"
    "リクエストを適切に完了するための回答を日本語で記述してください。一歩一歩考えましょう。\n\n"
    "### 指示:\n{question}\n\n### 応答:"
)
MGSM_JA_STOP_STRINGS = ("Instruction:", "Instruction", "Response:", "Response")
MGSM_JA_MAX_NEW_TOKENS = 1024

PLACEHOLDER = "{question}"
PROMPT_TEMPLATES: Registry[str] = Registry("prompt template")
PROMPT_TEMPLATES.register("ja_alpaca_cot", MGSM_JA_PROMPT_TEMPLATE)
PROMPT_TEMPLATES.register("plain", PLACEHOLDER)


def resolve_template(template: str) -> str:
    """A literal template (it contains {question}) as it is, else the registered one of that name."""
    if PLACEHOLDER in template:
        return template
    if template not in PROMPT_TEMPLATES:
        raise ValueError(f"prompt template {template!r} is neither a known name ({', '.join(PROMPT_TEMPLATES)}) "
                         f"nor contains {PLACEHOLDER}")
    return PROMPT_TEMPLATES.get(template)


def fill(template: str, question: str) -> str:
    return template.replace(PLACEHOLDER, question)
