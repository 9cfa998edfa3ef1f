"""The Celery app of the workers: `celery -A worker.celery_app worker` (or `kts worker`).

TensorFlow is imported in each worker process after the fork (worker_process_init), never in
a prefork parent: a child hangs if its parent ran a TensorFlow op before forking.
"""

from celery.signals import worker_process_init

from service.queue import make_celery
from service.settings import get_settings

app = make_celery(get_settings())
app.conf.include = ["worker.tasks"]


@worker_process_init.connect
def _init_process(**_kwargs: object) -> None:
    from worker.runtime import init_keras

    init_keras()
