"""Tutoring conversations: an exercise, the student's answers, the exact check, feedback."""

from __future__ import annotations

import random

from assistant.lab.corpus.dialogue import Dialogue
from assistant.lab.corpus.phrases import Phrases, entity_split, join
from assistant.tools.shop import ShopData
from assistant.tutoring.checker import check_answer
from assistant.tutoring.exercises import Exercise, generate, right_answers, wrong_answers

KINDS = ("arithmetic", "fractions", "percent", "equation", "conversion")

ANSWER = Phrases(
    [
        "{answer}",
        "I think it's {answer}",
        "is it {answer}?",
        "my answer: {answer}",
        "{answer}?",
        "I got {answer}",
        "answer = {answer}",
        "It should be {answer}.",
        "hmm, {answer}",
        "Let me try {answer}",
        "maybe {answer}",
        "{answer} I guess",
        "The answer is {answer}",
        "ok {answer}",
        "I'd say {answer}",
    ]
)
GIVE_UP = Phrases(
    [
        "I don't know",
        "no idea",
        "help, I'm stuck",
        "I give up",
        "can you show me?",
        "not sure how to do this",
        "I can't solve it",
        "what's the answer?",
        "I'm lost",
        "please explain",
    ]
)
RIGHT = Phrases(
    [
        "Correct! {explanation}",
        "Yes, that's right. {explanation}",
        "Well done! {explanation}",
        "Exactly right. {explanation}",
        "That's correct: {explanation}",
        "Great job, {answer} is correct. {explanation}",
        "Right! {explanation} Ready for the next one?",
        "Spot on. {explanation}",
        "Nice work! {explanation}",
        "Yes! {explanation} Keep it up.",
    ]
)
# Every training template for a wrong or missing answer quotes the same facts: the answer, the
# explanation and the hint. Fast diffusion drifts to the shortest template, so any fact one
# template leaves out is lost (run 6 lost the hint, run 7 the explanation). The held-out
# templates (index 4 and 9) are unchanged.
WRONG = Phrases(
    [
        "Not quite: the answer is {expected}. {explanation} Tip: {hint}",
        "That's not right: the answer is {expected}. {explanation} Next time: {hint}",
        "Close, but no. The correct answer is {expected}. {explanation} {hint}",
        "Not quite, {answer} isn't correct. The answer is {expected}. {explanation} {hint}",
        "Sorry, that's incorrect. The answer is {expected}. {explanation} Try this: {hint}",
        "Not this time. The answer is {expected}. {explanation} {hint}",
        "Almost! The answer is {expected}, not {answer}. {explanation} {hint}",
        "That's not it. The answer is {expected}. {explanation} Hint: {hint}",
        "Incorrect: it should be {expected}. {explanation} {hint}",
        "Not quite. {hint} The answer is {expected}.",
    ]
)
SHOW = Phrases(
    [
        "No problem! The answer is {expected}. {explanation} Tip: {hint}",
        "Let's work through it: {explanation} So the answer is {expected}. Tip: {hint}",
        "Here's how: {explanation} The answer is {expected}. Tip for next time: {hint}",
        "That's okay. The answer is {expected}. {explanation} {hint}",
        "Don't worry. The answer is {expected}. {explanation}",
        "Sure, here's the solution: {explanation} The answer is {expected}. Next time: {hint}",
    ]
)
EXERCISE_INTRO = Phrases(
    [
        "Exercise: {prompt}",
        "Exercise: {prompt}",
        "New exercise: {prompt}",
        "Exercise: {prompt}",
        "Next exercise: {prompt}",
    ]
)


def _feedback(
    rng: random.Random, split: str, answer: str, result: dict[str, object]
) -> tuple[str, list[str]]:
    values = {
        "answer": answer,
        "expected": str(result.get("expected", "")),
        "explanation": str(result.get("explanation", "")),
        "hint": str(result.get("hint", "")),
    }
    if result.get("correct"):
        return RIGHT.pick(rng, split, **values), [values["explanation"]]
    template = SHOW if not answer else WRONG
    text = template.pick(rng, split, **values)
    # The facts a reply must keep are the tool's values it quotes.
    return text, [v for k, v in values.items() if k != "answer" and v and v in text]


def _attempt(
    dialogue: Dialogue, rng: random.Random, split: str, exercise: Exercise, answer: str, text: str
) -> bool:
    result = check_answer(exercise.expression, answer)
    arguments = {"exercise": exercise.expression, "answer": answer}
    feedback, facts = _feedback(rng, split, answer, result)
    verdict = bool(result.get("correct"))
    dialogue.user(text, tool="check_answer", arguments=arguments, facts=facts, verdict=verdict)
    dialogue.call("check_answer", arguments, result)
    dialogue.say(feedback)
    return verdict


def tutoring(rng: random.Random, _store: ShopData, split: str) -> Dialogue:
    dialogue = Dialogue(split, "tutoring", "tutoring", "tutor")
    for _ in range(rng.choice((1, 1, 1, 2))):
        exercise = generate(rng.choice(KINDS), rng, entity_split(split))
        dialogue.system(EXERCISE_INTRO.pick(rng, split, prompt=exercise.prompt))
        roll = rng.random()
        if roll < 0.1:
            _attempt(dialogue, rng, split, exercise, "", GIVE_UP.pick(rng, split))
            continue
        pool = right_answers(exercise, rng) if roll < 0.55 else wrong_answers(exercise, rng)
        answer = rng.choice(pool)
        correct = _attempt(
            dialogue, rng, split, exercise, answer, ANSWER.pick(rng, split, answer=answer)
        )
        if not correct and rng.random() < 0.5:
            retry = rng.choice(right_answers(exercise, rng))
            _attempt(
                dialogue, rng, split, exercise, retry, join(ANSWER.pick(rng, split, answer=retry))
            )
    return dialogue
