"""Errors a job ends with, carrying the `error.code` stored on the job."""


class JobFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
