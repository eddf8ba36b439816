"""CLCA (Liu, Korhonen, Gurevych, ACL 2025): cultural-learning dialogue data with a local chat
model — role-play simulation, judge filtering, intent annotation — and the training views.

Each stage is a pure function of its inputs and a `ChatModel` (a batch of chats in, a batch of
texts out), so the stages run on any jaxcult causal LM and are tested with scripted models.
"""
