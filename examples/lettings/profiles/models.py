"""A profile adds a favourite city to a Django user."""

from django.conf import settings
from django.db import models


class Profile(models.Model):
    """One user's public profile."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    favorite_city = models.CharField(max_length=64, blank=True)

    def __str__(self):
        return self.user.username
