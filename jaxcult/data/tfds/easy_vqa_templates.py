"""Hand-written translations of easy-VQA's 24 English question templates into German, French,
Spanish and Chinese, for multilingual VQA transfer tests.

Every English question is one of the templates below with a colour and/or a shape filled in.
Translations avoid gender agreement by naming the colour or shape as a noun ("die Form Kreis",
"une forme de couleur rouge"), so one template per language covers every filler.
"""

from __future__ import annotations

import re

from jaxcult.errors import UserError

LANGUAGES = ("en", "de", "fr", "es", "zh")
COLORS = {"red": ("Rot", "rouge", "rojo", "红色"), "green": ("Grün", "vert", "verde", "绿色"),
          "blue": ("Blau", "bleu", "azul", "蓝色"), "black": ("Schwarz", "noir", "negro", "黑色"),
          "gray": ("Grau", "gris", "gris", "灰色"),
          "teal": ("Petrol", "bleu canard", "verde azulado", "青色"),
          "brown": ("Braun", "marron", "marrón", "棕色"), "yellow": ("Gelb", "jaune", "amarillo", "黄色")}
SHAPES = {"circle": ("Kreis", "cercle", "círculo", "圆形"),
          "rectangle": ("Rechteck", "rectangle", "rectángulo", "矩形"),
          "triangle": ("Dreieck", "triangle", "triángulo", "三角形")}

# English template -> (de, fr, es, zh); {c} = colour, {s} = shape
TEMPLATES = {
    "does the image contain a {c} shape?": (
        "Enthält das Bild eine Form in {c}?", "L'image contient-elle une forme de couleur {c} ?",
        "¿La imagen contiene una forma de color {c}?", "图中有{c}的形状吗？"),
    "does the image contain a {s}?": (
        "Enthält das Bild die Form {s}?", "L'image contient-elle la forme {s} ?",
        "¿La imagen contiene la forma {s}?", "图中有{s}吗？"),
    "does the image not contain a {c} shape?": (
        "Enthält das Bild keine Form in {c}?", "L'image ne contient-elle pas de forme de couleur {c} ?",
        "¿La imagen no contiene una forma de color {c}?", "图中没有{c}的形状吗？"),
    "does the image not contain a {s}?": (
        "Enthält das Bild nicht die Form {s}?", "L'image ne contient-elle pas la forme {s} ?",
        "¿La imagen no contiene la forma {s}?", "图中没有{s}吗？"),
    "is a {c} shape present?": (
        "Ist eine Form in {c} vorhanden?", "Une forme de couleur {c} est-elle présente ?",
        "¿Hay presente una forma de color {c}?", "有{c}的形状吗？"),
    "is a {s} present?": (
        "Ist die Form {s} vorhanden?", "La forme {s} est-elle présente ?",
        "¿Está presente la forma {s}?", "有{s}吗？"),
    "is no {c} shape present?": (
        "Ist keine Form in {c} vorhanden?", "Aucune forme de couleur {c} n'est-elle présente ?",
        "¿No hay ninguna forma de color {c}?", "没有{c}的形状吗？"),
    "is no {s} present?": (
        "Ist die Form {s} nicht vorhanden?", "La forme {s} est-elle absente ?",
        "¿No está presente la forma {s}?", "没有{s}吗？"),
    "is there a {c} shape in the image?": (
        "Gibt es im Bild eine Form in {c}?", "Y a-t-il une forme de couleur {c} dans l'image ?",
        "¿Hay una forma de color {c} en la imagen?", "图像中有{c}的形状吗？"),
    "is there a {c} shape?": (
        "Gibt es eine Form in {c}?", "Y a-t-il une forme de couleur {c} ?",
        "¿Hay una forma de color {c}?", "有没有{c}的形状？"),
    "is there a {s} in the image?": (
        "Gibt es im Bild die Form {s}?", "Y a-t-il la forme {s} dans l'image ?",
        "¿Está la forma {s} en la imagen?", "图像中有{s}吗？"),
    "is there a {s}?": (
        "Gibt es die Form {s}?", "Y a-t-il la forme {s} ?", "¿Está la forma {s}?", "有没有{s}？"),
    "is there not a {c} shape in the image?": (
        "Gibt es im Bild keine Form in {c}?", "N'y a-t-il pas de forme de couleur {c} dans l'image ?",
        "¿No hay una forma de color {c} en la imagen?", "图像中没有{c}的形状吗？"),
    "is there not a {c} shape?": (
        "Gibt es keine Form in {c}?", "N'y a-t-il pas de forme de couleur {c} ?",
        "¿No hay una forma de color {c}?", "没有{c}的形状吗？"),
    "is there not a {s} in the image?": (
        "Gibt es im Bild nicht die Form {s}?", "La forme {s} n'est-elle pas dans l'image ?",
        "¿No está la forma {s} en la imagen?", "图像中没有{s}吗？"),
    "is there not a {s}?": (
        "Gibt es die Form {s} nicht?", "La forme {s} n'est-elle pas là ?",
        "¿No está la forma {s}?", "没有{s}吗？"),
    "what color is the shape?": (
        "Welche Farbe hat die Form?", "De quelle couleur est la forme ?",
        "¿De qué color es la forma?", "这个形状是什么颜色？"),
    "what color is the {s}?": (
        "Welche Farbe hat die Form {s}?", "De quelle couleur est la forme {s} ?",
        "¿De qué color es la forma {s}?", "{s}是什么颜色？"),
    "what is the color of the shape?": (
        "Was ist die Farbe der Form?", "Quelle est la couleur de la forme ?",
        "¿Cuál es el color de la forma?", "形状的颜色是什么？"),
    "what is the color of the {s}?": (
        "Was ist die Farbe der Form {s}?", "Quelle est la couleur de la forme {s} ?",
        "¿Cuál es el color de la forma {s}?", "{s}的颜色是什么？"),
    "what is the {c} shape?": (
        "Welche Form hat die Farbe {c}?", "Quelle est la forme de couleur {c} ?",
        "¿Cuál es la forma de color {c}?", "{c}的形状是什么？"),
    "what shape does the image contain?": (
        "Welche Form enthält das Bild?", "Quelle forme l'image contient-elle ?",
        "¿Qué forma contiene la imagen?", "图中包含什么形状？"),
    "what shape is in the image?": (
        "Welche Form ist im Bild?", "Quelle forme est dans l'image ?",
        "¿Qué forma hay en la imagen?", "图像中是什么形状？"),
    "what shape is present?": (
        "Welche Form ist vorhanden?", "Quelle forme est présente ?",
        "¿Qué forma está presente?", "有什么形状？"),
}
_WORD = re.compile(r"\b(" + "|".join([*COLORS, *SHAPES]) + r")\b")


def translate(question: str, language: str) -> str:
    """The easy-VQA `question` in `language` (English returns it unchanged)."""
    if language == "en":
        return question
    if language not in LANGUAGES:
        raise UserError(f"easy-vqa: no templates for language {language!r} "
                        f"(available: {', '.join(LANGUAGES)})")
    fillers = {"c": None, "s": None}
    for word in _WORD.findall(question):
        fillers["c" if word in COLORS else "s"] = word
    template = _WORD.sub(lambda m: "{c}" if m.group(1) in COLORS else "{s}", question)
    if template not in TEMPLATES:
        raise UserError(f"easy-vqa: question {question!r} matches no known template")
    index = LANGUAGES.index(language) - 1
    return TEMPLATES[template][index].format(
        c=COLORS[fillers["c"]][index] if fillers["c"] else "",
        s=SHAPES[fillers["s"]][index] if fillers["s"] else "")
