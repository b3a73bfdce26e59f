from django.urls import reverse


def test_home_page_links_to_both_apps(client):
    response = client.get(reverse("index"))
    assert response.status_code == 200
    body = response.content.decode()
    assert "Welcome to Holiday Homes" in body
    assert 'href="/lettings/"' in body
    assert 'href="/profiles/"' in body


def test_admin_asks_for_login(client):
    response = client.get("/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
