// Logs in: the token goes in a POST body, and comes back as an HttpOnly cookie.
'use strict';

document.getElementById('login').addEventListener('click', async () => {
  const token = document.getElementById('token').value;
  const answer = await fetch('/login', {
    method: 'POST',
    headers: {'content-type': 'application/json'},
    body: JSON.stringify({token}),
  });
  if (answer.ok) {
    location.href = '/';
  } else {
    document.getElementById('error').textContent = 'That token is not known.';
  }
});
