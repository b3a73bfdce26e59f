"""WSGI entry point, for running the example behind a server."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oc_lettings_site.settings")
application = get_wsgi_application()
