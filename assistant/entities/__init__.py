"""Entities in text (order ids, emails, amounts, exercises...) and their typed placeholders."""
