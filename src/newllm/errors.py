"""Errors a user can act on. Stage entry points print them without a traceback."""


class NewLLMError(Exception):
    """An error with a message meant for the user (what is wrong, what to do)."""


class ConfigError(NewLLMError):
    def __init__(self, key: str, value: object, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"params.yaml: {key} = {value!r} is not allowed: expected {allowed}")


class DataError(NewLLMError):
    pass


class CheckpointError(NewLLMError):
    pass


class NumericalError(NewLLMError):
    pass
