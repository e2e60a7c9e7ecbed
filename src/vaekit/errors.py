"""One exception type for everything a user can get wrong.

The CLI turns a :class:`VaekitError` into one line on stderr
(``vaekit: error: ...``) and its ``exit_code``; anything else is a bug and
keeps its traceback.
"""


class VaekitError(Exception):
    """A problem with the user's input or environment, told in one sentence.

    ``exit_code`` follows the CLI contract: 2 for bad usage or bad input,
    1 for a failure while running.
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
