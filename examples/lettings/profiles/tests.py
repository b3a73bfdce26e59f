import pytest
from django.urls import resolve, reverse

from .models import Profile


@pytest.fixture
def profile(django_user_model):
    user = django_user_model.objects.create_user(
        username="ada", first_name="Ada", last_name="Byron", email="ada@example.org"
    )
    return Profile.objects.create(user=user, favorite_city="London")


def test_profile_str(profile):
    assert str(profile) == "ada"


def test_urls_resolve():
    assert reverse("profiles:index") == "/profiles/"
    assert reverse("profiles:profile", kwargs={"username": "ada"}) == "/profiles/ada/"
    assert resolve("/profiles/ada/").kwargs == {"username": "ada"}


@pytest.mark.usefixtures("profile")
def test_index_lists_usernames(client):
    response = client.get(reverse("profiles:index"))
    assert response.status_code == 200
    assert 'href="/profiles/ada/"' in response.content.decode()


@pytest.mark.usefixtures("profile")
def test_detail_shows_favorite_city(client):
    response = client.get(reverse("profiles:profile", kwargs={"username": "ada"}))
    assert response.status_code == 200
    body = response.content.decode()
    assert "<h1>ada</h1>" in body
    assert "London" in body
    assert "Ada Byron" in body


@pytest.mark.django_db
def test_detail_of_unknown_user_is_404(client):
    response = client.get(reverse("profiles:profile", kwargs={"username": "nobody"}))
    assert response.status_code == 404
