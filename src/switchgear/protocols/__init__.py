"""Translations between the APIs clients speak and the OpenAI chat shape the pipeline runs on.

Pure functions, no I/O: an inbound adapter turns a request body of another API (Anthropic
Messages, OpenAI Responses) into an OpenAI chat body and the chat reply (a dict, or a stream of
chat chunks) back into that API's answer; an upstream adapter does the opposite for a model
server that speaks another API.
"""
