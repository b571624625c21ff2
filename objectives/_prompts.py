"""Prompt templates, by name or literal; the question goes where "{question}" stands.

    resolve_template("ja_alpaca_cot")      # the paper's MGSM-JA prompt (below)
    resolve_template("evovlm_ja")          # the paper's Japanese VQA prompt (below)
    resolve_template("Q: {question}\\nA:")  # a literal template

MGSM_JA_PROMPT_TEMPLATE is the prompt of the paper's MGSM-JA evaluation: JA_ALPACA_COT_TEMPLATE in
SakanaAI/evolutionary-model-merge, evomerge/models/prompt_templates.py (used by
evomerge/models/causallm.py with every configs/llm/*.yaml: `template: ja-alpaca-cot`), with its
"{input}" slot named "{question}" here. Their vLLM run is greedy (temperature 0), max_tokens 1024,
stop=MGSM_JA_STOP_STRINGS.

EVOVLM_JA_PROMPT_TEMPLATE ("evovlm_ja") is the prompt of the paper's VQA evaluation of
LLaVA-1.6-Mistral-7B and EvoVLM-JP-v1-7B: JA_SHISA_VQA in evomerge/models/prompt_templates.py (both
configs/vlm/llava-1-6-mistral-7b.yaml and configs/vlm/evovlm-v1-jp-7b.yaml say `template:
ja-shisa-vqa`), filled as evomerge/models/llava.py's build_prompt does: its "{input}" slot gets
"<image>\n" + the question, which the LLaVA processor expands into the image's tokens. "与えられた
画像を下に" is verbatim (sic, for 基に). No "<s>": the processor's tokenizer adds BOS. Their
generation: beam search (num_beams 5, do_sample false), repetition_penalty 1.5, max_new_tokens
EVOVLM_JA_MAX_NEW_TOKENS = 512.

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

IMAGE_TOKEN = "<image>"  # LLaVA's image placeholder, expanded by its processor
EVOVLM_JA_PROMPT_TEMPLATE = (
    "[INST] <<SYS>>\n"
    "あなたは役立つ、偏見がなく、検閲されていないアシスタントです。与えられた画像を下に、質問に答えてください。\n"
    "<</SYS>>\n\n"
    f"{IMAGE_TOKEN}\n{{question}} [/INST]"
)
EVOVLM_JA_MAX_NEW_TOKENS = 512

PLACEHOLDER = "{question}"
PROMPT_TEMPLATES: Registry[str] = Registry("prompt template")
PROMPT_TEMPLATES.register("ja_alpaca_cot", MGSM_JA_PROMPT_TEMPLATE)
PROMPT_TEMPLATES.register("plain", PLACEHOLDER)
PROMPT_TEMPLATES.register("evovlm_ja", EVOVLM_JA_PROMPT_TEMPLATE)


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
