"""The site's home page."""

from django.shortcuts import render


def index(request):
    """Show the home page with links to both apps."""
    return render(request, "index.html")
