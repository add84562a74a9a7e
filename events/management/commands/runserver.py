"""``manage.py runserver`` over ASGI, so the event endpoints stream in development.

Django's own ``runserver`` is WSGI: an endless stream never sends even its
headers. With ``events`` in ``INSTALLED_APPS`` *before*
``django.contrib.staticfiles`` (Django takes a command from the first app
that has it; check ``events.W004`` says so otherwise), this command replaces
it, as daphne's does for Channels users. It keeps everything else
``runserver`` does:

- the same arguments (``addrport``, ``--ipv6``, ``--noreload``, ``--nostatic``,
  ``--insecure``, ``--skip-checks``), checks and migration warnings;
- static files with ``DEBUG=True`` (staticfiles' ``ASGIStaticFilesHandler``);
- Django's autoreloader (``autoreload.run_with_reloader``).

It serves the project's ASGI application (``settings.ASGI_APPLICATION``, else
the ``asgi`` module next to ``WSGI_APPLICATION``, else
:func:`events.asgi.events_asgi_app`) under uvicorn, with the events lifespan
around it if the application does not have it. Ctrl-C (and a reload) first
ends open streams cleanly (their closing comment, then the end of the body),
then stops. ``--wsgi`` runs Django's own WSGI server instead.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any, cast

from django.apps import apps
from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.contrib.staticfiles.management.commands.runserver import Command as StaticfilesRunserver
from django.core.handlers.asgi import ASGIHandler
from django.core.management.base import CommandError, CommandParser
from django.core.management.commands.runserver import Command as DjangoRunserver
from django.db import connections
from django.utils import autoreload
from django.utils.module_loading import import_string

from ...asgi import LifespanApp, events_asgi_app
from ...serving.asgi_types import ASGIApp
from ...serving.handlers import EventsASGIHandler
from ...serving.shutdown import shutdown_watch

# Seconds to wait for open streams to end (and the server to stop) on Ctrl-C or a reload.
STOP_WAIT = 3.0


class Command(StaticfilesRunserver):
    help = (
        "Starts a development server over ASGI (uvicorn): the event endpoints stream, static files "
        "are served with DEBUG=True, code changes reload it. --wsgi for Django's own WSGI server."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--wsgi",
            action="store_true",
            dest="use_wsgi",
            help="Run Django's own WSGI development server (the event streams then never start).",
        )

    def get_handler(self, *args: Any, **options: Any) -> Any:
        """The WSGI handler (``--wsgi``), with static files only if staticfiles is installed."""
        if apps.is_installed("django.contrib.staticfiles"):
            return super().get_handler(*args, **options)
        return DjangoRunserver.get_handler(self, *args, **options)

    def run(self, **options: Any) -> None:
        if not options["use_wsgi"] and options["use_reloader"]:
            # The server runs in a thread of the reloader's child process;
            # its main thread (the reloader) takes the signals: see Stopper.
            autoreload.autoreload_started.connect(self.stopper.install, dispatch_uid="events-runserver")
            autoreload.file_changed.connect(self.stopper.on_file_changed, dispatch_uid="events-runserver")
        super().run(**options)

    @property
    def stopper(self) -> Stopper:
        stopper: Stopper | None = getattr(self, "_stopper", None)
        if stopper is None:
            stopper = self._stopper = Stopper()
        return stopper

    def inner_run(self, *args: Any, **options: Any) -> None:
        if options["use_wsgi"]:
            super().inner_run(*args, **options)
            return
        try:
            import uvicorn
        except ImportError:
            raise CommandError(
                "The events app's runserver needs uvicorn: `python -m pip install 'uvicorn[standard]'` "
                "(or run `manage.py runserver --wsgi`, which cannot stream)."
            ) from None
        autoreload.raise_last_exception()
        if not options["skip_checks"]:
            self.stdout.write("Performing system checks...\n\n")
            check_kwargs: dict[str, Any] = {**cast(Any, super().get_check_kwargs(options)), "display_num_errors": True}
            self.check(**check_kwargs)
        self.check_migrations()
        for connection in connections.all(initialized_only=True):
            connection.close()

        application = self.get_asgi_application(**options)
        # Set by Django's handle() from addrport (django-stubs do not declare them).
        addr: str = getattr(self, "addr")  # noqa: B009
        port: str = getattr(self, "port")  # noqa: B009
        config = uvicorn.Config(
            application,
            host=addr,
            port=int(port),
            lifespan="on",
            # Open streams end at once on Ctrl-C; this only bounds a stuck one.
            timeout_graceful_shutdown=int(STOP_WAIT),
            log_level="info",
        )
        server = uvicorn.Server(config)
        self.stopper.server = server
        self.on_bind(int(port))
        try:
            server.run()
        except KeyboardInterrupt:
            # uvicorn re-raises the Ctrl-C it handled once it has stopped (as
            # `uvicorn.run` does, and Django's runserver): a normal end.
            shutdown_message = options.get("shutdown_message", "")
            if shutdown_message:
                self.stdout.write(shutdown_message)
            sys.exit(0)
        except OSError as exc:
            messages = {
                errno.EACCES: "You don't have permission to access that port.",
                errno.EADDRINUSE: "That port is already in use.",
                errno.EADDRNOTAVAIL: "That IP address can't be assigned to.",
            }
            self.stderr.write(f"Error: {messages.get(exc.errno or 0, exc)}")
            os._exit(1)  # as Django's: sys.exit does not work in the reloader's thread
        if not server.started:
            # uvicorn logged why (a port in use, a failed lifespan startup).
            os._exit(1)

    def get_asgi_application(self, **options: Any) -> ASGIApp:
        """The project's ASGI application with the events lifespan, and static files with ``DEBUG=True``."""
        application = with_events(project_asgi_application())
        static = options["use_static_handler"] and (settings.DEBUG or options["insecure_serving"])
        if static and apps.is_installed("django.contrib.staticfiles"):
            static_files: Any = ASGIStaticFilesHandler(cast(Any, application))  # typed for ASGIHandler only
            return cast(ASGIApp, static_files)
        return application


def project_asgi_application() -> Any:
    """``settings.ASGI_APPLICATION``, else ``application`` of the asgi module next to ``WSGI_APPLICATION``."""
    path = getattr(settings, "ASGI_APPLICATION", None)
    if path:
        return import_string(path)
    wsgi_path = getattr(settings, "WSGI_APPLICATION", None) or ""
    module, _, _ = wsgi_path.rpartition(".")
    if module.endswith(".wsgi"):
        try:
            return import_string(module.removesuffix(".wsgi") + ".asgi.application")
        except ImportError:
            pass
    return None


def with_events(application: Any) -> ASGIApp:
    """``application`` with the events lifespan (and the events handler instead of Django's stock one)."""
    if application is None or (isinstance(application, ASGIHandler) and not isinstance(application, EventsASGIHandler)):
        # Nothing found, or Django's stock get_asgi_application(): the events one is that, plus.
        return events_asgi_app()
    if isinstance(application, LifespanApp):
        return application
    # E.g. a Channels ProtocolTypeRouter: the events lifespan around it.
    return LifespanApp(application)


class Stopper:
    """Ctrl-C and reloads for a server run in the reloader's thread: end the streams, then stop.

    Without it the reloader's main thread would exit at once and take the
    server's thread with it, dropping every open stream mid-body.
    """

    def __init__(self) -> None:
        self.server: Any = None
        self.thread: threading.Thread | None = None

    def install(self, **kwargs: Any) -> None:
        """``autoreload_started`` receiver: runs in the main thread, where signal handlers are set."""
        self.thread = next((t for t in threading.enumerate() if t.name == "django-main-thread"), None)
        signal.signal(signal.SIGINT, self.on_signal)
        signal.signal(signal.SIGTERM, self.on_signal)

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt  # ends the reloader, as Ctrl-C does
        sys.exit(0)

    def on_file_changed(self, **kwargs: Any) -> None:
        """``file_changed`` receiver: end the streams before the reloader restarts the process."""
        self.stop()

    def stop(self) -> None:
        server = self.server
        if server is None:
            return
        shutdown_watch.begin()
        server.should_exit = True
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(STOP_WAIT)
