import pytest
from django.urls import resolve, reverse

from .models import Address, Letting


@pytest.fixture
def letting(db):  # noqa: ARG001 - db enables database access
    address = Address.objects.create(
        number=7,
        street="Harbor Lane",
        city="Portland",
        state="ME",
        zip_code=4101,
        country_iso_code="USA",
    )
    return Letting.objects.create(title="Seaside Loft", address=address)


def test_address_str(letting):
    assert str(letting.address) == "7 Harbor Lane"


def test_letting_str(letting):
    assert str(letting) == "Seaside Loft"


def test_urls_resolve():
    assert reverse("lettings:index") == "/lettings/"
    assert reverse("lettings:letting", kwargs={"letting_id": 3}) == "/lettings/3/"
    assert resolve("/lettings/3/").view_name == "lettings:letting"


def test_index_lists_lettings(client, letting):
    response = client.get(reverse("lettings:index"))
    assert response.status_code == 200
    assert "Seaside Loft" in response.content.decode()
    assert reverse("lettings:letting", kwargs={"letting_id": letting.id}) in (
        response.content.decode()
    )


@pytest.mark.django_db
def test_index_without_lettings(client):
    response = client.get(reverse("lettings:index"))
    assert response.status_code == 200
    assert "No lettings are available." in response.content.decode()


def test_detail_shows_address(client, letting):
    response = client.get(reverse("lettings:letting", kwargs={"letting_id": letting.id}))
    assert response.status_code == 200
    assert response.templates[0].name == "lettings/letting.html"
    body = response.content.decode()
    assert "<h1>Seaside Loft</h1>" in body
    assert "Portland, ME 4101" in body


@pytest.mark.django_db
def test_detail_of_unknown_letting_is_404(client):
    response = client.get(reverse("lettings:letting", kwargs={"letting_id": 999}))
    assert response.status_code == 404
