"""The one prompt used by training, evaluation and serving: a video plus a question listing the classes.

The answer is the class name followed by `<|im_end|>`; only those tokens carry loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vlmchallenge.data.classes import OPENPACK_OPERATIONS

DEFAULT_QUESTION = (
    "Which packaging operation is shown in the video? Options: {options}. Answer with one option."
)


def operation_names(include_null: bool = False) -> list[str]:
    return [c.name for c in OPENPACK_OPERATIONS if include_null or not c.is_ignore]


@dataclass
class PromptBuilder:
    class_names: list[str] = field(default_factory=operation_names)
    question: str = DEFAULT_QUESTION
    answer_suffix: str = "<|im_end|>"
    # extra chat-template arguments from the model family, e.g. `enable_thinking: false` so the label follows
    # the assistant header directly (models/families/); saved with the prompt so serving renders it the same
    template_kwargs: dict = field(default_factory=dict)

    def messages(self) -> list[dict]:
        text = self.question.format(options=", ".join(self.class_names))
        return [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": text}]}]

    def prompt(self, processor) -> str:
        """Chat-templated prompt ending with the assistant header (`<|im_start|>assistant\\n`)."""
        return processor.apply_chat_template(
            self.messages(), tokenize=False, add_generation_prompt=True, **self.template_kwargs
        )

    def answer(self, class_index: int) -> str:
        return self.class_names[class_index] + self.answer_suffix

    def answer_token_ids(self, tokenizer) -> list[list[int]]:
        """Each class's answer tokenised on its own: what the loss supervises and what scoring ranks."""
        return [
            tokenizer(self.answer(i), add_special_tokens=False)["input_ids"]
            for i in range(len(self.class_names))
        ]

    def parse(self, text: str) -> int | None:
        """Generated text -> class index by exact match after normalising case and whitespace."""
        norm = " ".join(text.replace(self.answer_suffix, "").split()).casefold()
        matches = [i for i, name in enumerate(self.class_names) if name.casefold() == norm]
        return matches[0] if matches else None

    def to_dict(self) -> dict:
        return {
            "class_names": self.class_names,
            "question": self.question,
            "answer_suffix": self.answer_suffix,
            "template_kwargs": dict(self.template_kwargs),
        }
